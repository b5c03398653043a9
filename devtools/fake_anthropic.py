"""Scriptable fake of the Anthropic Messages API, for driving the real Claude Code CLI offline.

Point the CLI at it with ``ANTHROPIC_BASE_URL=<base_url>``. Each *conversation* call to
``POST /v1/messages`` consumes one scripted turn; the CLI's own side calls (title/topic
generation, quota probes) are answered with a short canned text so a script only has to
describe the conversation itself. Stdlib only, so it runs in any environment the CLI runs in.

    with FakeAnthropic([bash_turn("ls"), TextTurn("done")]) as api:
        run_cli(env={"ANTHROPIC_BASE_URL": api.base_url, ...})
        assert api.conversation_requests[-1]["messages"][-1]["role"] == "user"

``python -m devtools.fake_anthropic --scenario demo`` serves a named scenario until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

JSON = dict[str, Any]

MIB: Final = 1024 * 1024
DEFAULT_TEXT: Final = "OK (fake default answer: the script is exhausted)."
SIDE_CALL_TEXT: Final = "Offline session"
FAKE_SIGNATURE: Final = "ZmFrZS1zaWduYXR1cmUtZm9yLW9mZmxpbmUtdGVzdHM="

# The Messages API names one error type per status; the CLI keys its retry and
# "login" logic off the status, the text is what users end up seeing.
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------- script turns


@dataclass(frozen=True)
class TextTurn:
    """A plain text answer, optionally streamed in ``chunks`` deltas ``delay`` seconds apart."""

    text: str
    chunks: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class ThinkingTurn:
    """An extended-thinking block (with signature) followed by a text answer."""

    thinking: str
    text: str
    signature: str = FAKE_SIGNATURE
    chunks: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class ToolUseTurn:
    """A tool call; the CLI runs the tool and the *next* turn answers its tool_result."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""  # optional text block emitted before the tool_use block
    tool_use_id: str = ""  # generated when empty


@dataclass(frozen=True)
class ErrorTurn:
    """An HTTP error with an Anthropic error body, served ``times`` times in a row.

    ``times`` > 1 matters because the CLI retries 429/5xx: each retry consumes one serving.
    """

    status: int
    message: str = "Fake error injected by the test script."
    times: int = 1
    retry_after: int | None = None

    @property
    def error_type(self) -> str:
        return ERROR_TYPES.get(self.status, "api_error")


Turn = TextTurn | ThinkingTurn | ToolUseTurn | ErrorTurn


def bash_turn(command: str, description: str = "Run a command") -> ToolUseTurn:
    return ToolUseTurn("Bash", {"command": command, "description": description})


def big_text_turn(nbytes: int = MIB, chunks: int = 64) -> TextTurn:
    # Lines of 64 chars keep the payload realistic while still producing one huge JSON line
    # in the CLI's stream-json output (newlines are escaped there).
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
    text = (line * (nbytes // len(line) + 1))[:nbytes]
    return TextTurn(text, chunks=chunks)


def slow_text_turn(text: str, chunks: int = 10, delay: float = 0.5) -> TextTurn:
    return TextTurn(text, chunks=chunks, delay=delay)


def error_turn(status: int, times: int = 1) -> ErrorTurn:
    return ErrorTurn(status, f"Fake HTTP {status} injected by the test script.", times=times)


def _error_scenario(status: int) -> Callable[[], list[Turn]]:
    # Sticky error (served many times) so the CLI's retries keep failing.
    return lambda: [error_turn(status, times=100)]


# Named scenarios: small scripts shared by the CLI entry point and devtools.capture.
SCENARIOS: Final[Mapping[str, Callable[[], list[Turn]]]] = {
    "demo": lambda: [
        bash_turn("echo hello from the tool", "Print a greeting"),
        TextTurn(
            "This is an offline demo: the answer comes from a fake Anthropic API, and the "
            "Bash tool just ran `echo hello from the tool` on your machine.",
            chunks=6,
            delay=0.05,
        ),
    ],
    "text": lambda: [TextTurn("Hello from the fake API.", chunks=3)],
    "thinking": lambda: [
        ThinkingTurn("The user wants a greeting. Keep it short.", "Hi there!", chunks=2)
    ],
    "bash": lambda: [bash_turn("echo hello from the tool"), TextTurn("The tool printed hello.")],
    # A bare `sleep N` is refused by the CLI ("Blocked: standalone sleep"), so chain it.
    "sleep": lambda: [
        bash_turn("echo waiting && sleep 30 && echo done", "Wait"),
        TextTurn("Done."),
    ],
    "big": lambda: [big_text_turn()],
    "slow": lambda: [slow_text_turn("one two three four five six", chunks=6, delay=0.5)],
    **{f"error-{status}": _error_scenario(status) for status in (400, 401, 429, 500, 529)},
}


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class _Reply:
    """Content blocks of one assistant message plus how to pace its streaming."""

    blocks: list[JSON]
    stop_reason: str
    chunks: int = 1
    delay: float = 0.0


def _reply_for(turn: TextTurn | ThinkingTurn | ToolUseTurn) -> _Reply:
    if isinstance(turn, TextTurn):
        return _Reply([_text_block(turn.text)], "end_turn", turn.chunks, turn.delay)
    if isinstance(turn, ThinkingTurn):
        thinking = {"type": "thinking", "thinking": turn.thinking, "signature": turn.signature}
        return _Reply([thinking, _text_block(turn.text)], "end_turn", turn.chunks, turn.delay)
    tool_id = turn.tool_use_id or f"toolu_{uuid.uuid4().hex[:24]}"
    tool = {"type": "tool_use", "id": tool_id, "name": turn.name, "input": dict(turn.input)}
    blocks = [_text_block(turn.text), tool] if turn.text else [tool]
    return _Reply(blocks, "tool_use")


def _text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def _split(text: str, parts: int) -> list[str]:
    if parts <= 1 or len(text) <= 1:
        return [text]
    size = -(-len(text) // parts)  # ceiling division so we never emit more than `parts`
    return [text[i : i + size] for i in range(0, len(text), size)]


def _estimate_tokens(payload: object) -> int:
    # Roughly 4 characters per token, like the real tokenizer on English text.
    return max(1, len(json.dumps(payload)) // 4)


def _usage(input_tokens: int, output_tokens: int) -> JSON:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(reply: _Reply, model: str, input_tokens: int) -> JSON:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(input_tokens, _estimate_tokens(reply.blocks)),
    }


def _sse_events(reply: _Reply, model: str, input_tokens: int) -> Iterator[tuple[JSON, float]]:
    """Yield (event, delay-before-next) pairs in the order the real API streams them."""
    start = _message(reply, model, input_tokens)
    start.update(content=[], stop_reason=None, usage=_usage(input_tokens, 1))
    yield {"type": "message_start", "message": start}, 0.0
    for index, block in enumerate(reply.blocks):
        yield {"type": "content_block_start", "index": index, "content_block": _empty(block)}, 0.0
        if index == 0:
            yield {"type": "ping"}, 0.0
        for delta in _deltas(block, reply.chunks):
            yield {"type": "content_block_delta", "index": index, "delta": delta}, reply.delay
        yield {"type": "content_block_stop", "index": index}, 0.0
    final_usage = _usage(input_tokens, _estimate_tokens(reply.blocks))
    del final_usage["service_tier"]  # message_delta usage carries cumulative counts only
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    yield {"type": "message_delta", "delta": delta, "usage": final_usage}, 0.0
    yield {"type": "message_stop"}, 0.0


def _empty(block: JSON) -> JSON:
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {**block, "input": {}}


def _deltas(block: JSON, chunks: int) -> Iterator[JSON]:
    if block["type"] == "text":
        for piece in _split(block["text"], chunks):
            yield {"type": "text_delta", "text": piece}
    elif block["type"] == "thinking":
        for piece in _split(block["thinking"], chunks):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}
    else:
        # The real API opens tool input with an empty fragment, then streams the JSON text.
        yield {"type": "input_json_delta", "partial_json": ""}
        for piece in _split(json.dumps(block["input"]), 2):
            yield {"type": "input_json_delta", "partial_json": piece}


def error_body(turn: ErrorTurn) -> JSON:
    return {"type": "error", "error": {"type": turn.error_type, "message": turn.message}}


# --------------------------------------------------------------------------- side calls


def is_side_call(body: Mapping[str, Any]) -> bool:
    """True for the CLI's housekeeping calls that must not consume a scripted turn.

    Observed with CLI 2.1.330: conversation calls always carry the tool list (even when
    every tool would be denied), while title/topic generation and the quota probe send
    no tools. A tiny ``max_tokens`` is a second tell for probes.
    """
    if not body.get("tools"):
        return True
    max_tokens = body.get("max_tokens")
    return isinstance(max_tokens, int) and max_tokens <= 1


# --------------------------------------------------------------------------- server


@dataclass(frozen=True)
class Exchange:
    """One request the fake received; ``body`` is the parsed JSON (or None)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # slow streams must not keep the process alive after close()
    fake: FakeAnthropic


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the CLI can keep connections alive; streams use chunked encoding.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            sys.stderr.write(f"fake_anthropic: {format % args}\n")

    def do_GET(self) -> None:
        self._record(None)
        self._send_json(200, {})

    def do_HEAD(self) -> None:
        self._record(None)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._read_json()
        self._record(body)
        path = urlsplit(self.path).path
        if path == "/v1/messages" and isinstance(body, dict):
            self._messages(body)
        elif path.endswith("/count_tokens"):
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
        else:
            self._send_json(200, {})

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _messages(self, body: JSON) -> None:
        action = self.server.fake._next_action(body)
        if isinstance(action, ErrorTurn):
            headers = {"retry-after": str(action.retry_after)} if action.retry_after else {}
            self._send_json(action.status, error_body(action), headers)
            return
        model = str(body.get("model", "claude-fake"))
        input_tokens = _estimate_tokens(body.get("messages", []))
        if body.get("stream"):
            self._stream(action, model, input_tokens)
        else:
            self._send_json(200, _message(action, model, input_tokens))

    def _stream(self, reply: _Reply, model: str, input_tokens: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        closing = self.server.fake._closing
        try:
            for event, delay in _sse_events(reply, model, input_tokens):
                data = json.dumps(event, separators=(",", ":"))
                self._write_chunk(f"event: {event['type']}\ndata: {data}\n\n".encode())
                # Event.wait instead of sleep so close() cuts slow streams short.
                if delay and closing.wait(delay):
                    break
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client went away mid-stream; nothing to clean up

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_json(self) -> Any:
        raw = self._read_body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()  # trailer terminator
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, body: Any) -> None:
        self.server.fake._record(Exchange(self.command, self.path, dict(self.headers), body))


class FakeAnthropic:
    """Threaded fake API server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Sequence[Turn] = (),
        *,
        port: int = 0,
        default_text: str = DEFAULT_TEXT,
        verbose: bool = False,
    ) -> None:
        self.verbose = verbose
        self._script: deque[Turn] = deque(script)
        self._served_current_error = 0
        self._default_text = default_text
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.exchanges: list[Exchange] = []
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        # A short poll interval keeps close() (and so every test teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-anthropic", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[JSON]:
        """Every JSON body POSTed to /v1/messages, conversation and side calls alike."""
        with self._lock:
            return [
                e.body
                for e in self.exchanges
                if e.method == "POST"
                and urlsplit(e.path).path == "/v1/messages"
                and isinstance(e.body, dict)
            ]

    @property
    def conversation_requests(self) -> list[JSON]:
        return [body for body in self.requests if not is_side_call(body)]

    @property
    def side_requests(self) -> list[JSON]:
        return [body for body in self.requests if is_side_call(body)]

    @property
    def turns_left(self) -> int:
        with self._lock:
            return len(self._script)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)
        if self.verbose:
            _log_exchange(exchange)

    def _next_action(self, body: JSON) -> _Reply | ErrorTurn:
        if is_side_call(body):
            return _Reply([_text_block(SIDE_CALL_TEXT)], "end_turn")
        with self._lock:
            if not self._script:
                return _Reply([_text_block(self._default_text)], "end_turn")
            turn = self._script[0]
            if isinstance(turn, ErrorTurn):
                self._served_current_error += 1
                if self._served_current_error >= turn.times:
                    self._script.popleft()
                    self._served_current_error = 0
                return turn
            self._script.popleft()
        return _reply_for(turn)


def _log_exchange(exchange: Exchange) -> None:
    summary = ""
    if isinstance(exchange.body, dict):
        body = exchange.body
        summary = (
            f" model={body.get('model')} max_tokens={body.get('max_tokens')}"
            f" stream={body.get('stream')} tools={len(body.get('tools') or [])}"
            f" messages={len(body.get('messages') or [])} side={is_side_call(body)}"
        )
    sys.stderr.write(f"fake_anthropic: {exchange.method} {exchange.path}{summary}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="demo")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with FakeAnthropic(SCENARIOS[args.scenario](), port=args.port, verbose=args.verbose) as api:
        print(f"FAKE_ANTHROPIC_URL={api.base_url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
