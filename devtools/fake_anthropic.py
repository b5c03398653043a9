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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from devtools.fake_replies import (
    Reply,
    error_body,
    estimate_tokens,
    is_side_call,
    message_json,
    reply_for,
    sse_events,
    text_block,
)
from devtools.fake_script import (
    DEFAULT_TEXT,
    FAKE_SIGNATURE,
    JSON,
    MIB,
    SCENARIOS,
    SIDE_CALL_TEXT,
    ErrorTurn,
    TextTurn,
    ThinkingTurn,
    ToolUseTurn,
    Turn,
    bash_turn,
    big_text_turn,
    error_turn,
    slow_text_turn,
)

# The script's names are this module's too: tests and tools import them from here.
__all__ = [
    "DEFAULT_TEXT",
    "FAKE_SIGNATURE",
    "MIB",
    "SCENARIOS",
    "SIDE_CALL_TEXT",
    "ErrorTurn",
    "Exchange",
    "FakeAnthropic",
    "TextTurn",
    "ThinkingTurn",
    "ToolUseTurn",
    "Turn",
    "bash_turn",
    "big_text_turn",
    "error_turn",
    "main",
    "slow_text_turn",
]


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
            self._send_json(200, {"input_tokens": estimate_tokens(body)})
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
        input_tokens = estimate_tokens(body.get("messages", []))
        if body.get("stream"):
            self._stream(action, model, input_tokens)
        else:
            self._send_json(200, message_json(action, model, input_tokens))

    def _stream(self, reply: Reply, model: str, input_tokens: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        closing = self.server.fake._closing
        try:
            for event, delay in sse_events(reply, model, input_tokens):
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

    def _next_action(self, body: JSON) -> Reply | ErrorTurn:
        if is_side_call(body):
            return Reply([text_block(SIDE_CALL_TEXT)], "end_turn")
        with self._lock:
            if not self._script:
                return Reply([text_block(self._default_text)], "end_turn")
            turn = self._script[0]
            if isinstance(turn, ErrorTurn):
                self._served_current_error += 1
                if self._served_current_error >= turn.times:
                    self._script.popleft()
                    self._served_current_error = 0
                return turn
            self._script.popleft()
        return reply_for(turn)


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
