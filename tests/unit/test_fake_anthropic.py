"""The fake Anthropic API over real HTTP: SSE shape, errors, side calls, the CLI entry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from devtools.fake_anthropic import (
    SIDE_CALL_TEXT,
    ErrorTurn,
    FakeAnthropic,
    TextTurn,
    ThinkingTurn,
    bash_turn,
)

REPO = Path(__file__).resolve().parents[2]
TOOLS = [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}]


def conversation(*, stream: bool = True, text: str = "hi") -> dict[str, Any]:
    """A request shaped like the CLI's conversation calls (always carries tools)."""
    return {
        "model": "claude-test",
        "max_tokens": 32000,
        "stream": stream,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def fetch(method: str, url: str, body: object = None) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")  # the fake only ever listens on loopback
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", "x-api-key": "sk-test-fake"}
    request = Request(url, data=data, headers=headers, method=method)  # noqa: S310
    with urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, response.read()


def post(url: str, body: object, path: str = "/v1/messages?beta=true") -> tuple[int, bytes]:
    return fetch("POST", url + path, body)


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[FakeAnthropic]:
    script = getattr(request, "param", ())
    with FakeAnthropic(script) as fake:
        yield fake


@pytest.mark.parametrize("api", [[TextTurn("Hello there, world", chunks=3)]], indirect=True)
def test_text_stream_follows_the_messages_api_event_order(api: FakeAnthropic) -> None:
    status, raw = post(api.base_url, conversation())
    events = sse(raw)

    assert status == 200
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert "".join(d["text"] for d in deltas) == "Hello there, world"
    start, final = events[0][1]["message"], events[-2][1]
    assert start["model"] == "claude-test" and start["content"] == []
    assert start["usage"]["input_tokens"] > 0
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0


@pytest.mark.parametrize(
    "api", [[ThinkingTurn("ponder", "answer"), bash_turn("ls -la")]], indirect=True
)
def test_thinking_and_tool_use_deltas(api: FakeAnthropic) -> None:
    thinking = sse(post(api.base_url, conversation())[1])
    deltas = [d["delta"]["type"] for n, d in thinking if n == "content_block_delta"]
    assert deltas == ["thinking_delta", "signature_delta", "text_delta"]

    tool = sse(post(api.base_url, conversation())[1])
    block = next(d["content_block"] for n, d in tool if n == "content_block_start")
    partial = "".join(d["delta"]["partial_json"] for n, d in tool if n == "content_block_delta")
    assert block["type"] == "tool_use" and block["name"] == "Bash"
    assert json.loads(partial)["command"] == "ls -la"
    assert tool[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    "api", [[ErrorTurn(529, "busy", times=2), TextTurn("recovered")]], indirect=True
)
def test_error_turn_is_served_times_then_the_script_moves_on(api: FakeAnthropic) -> None:
    for _ in range(2):
        with pytest.raises(HTTPError) as caught:
            post(api.base_url, conversation())
        error = caught.value
        body = json.loads(error.read())
        error.close()
        assert error.code == 529
        assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}

    _, raw = post(api.base_url, conversation(stream=False))
    assert json.loads(raw)["content"] == [{"type": "text", "text": "recovered"}]


@pytest.mark.parametrize("api", [[TextTurn("scripted")]], indirect=True)
def test_side_calls_do_not_consume_scripted_turns(api: FakeAnthropic) -> None:
    title = {"model": "m", "max_tokens": 512, "messages": [{"role": "user", "content": "x"}]}
    quota = {**conversation(stream=False), "max_tokens": 1}  # the CLI's quota probe

    for side_call in (title, quota):
        _, raw = post(api.base_url, side_call)
        assert json.loads(raw)["content"] == [{"type": "text", "text": SIDE_CALL_TEXT}]
    assert api.turns_left == 1

    _, raw = post(api.base_url, conversation(stream=False))
    assert json.loads(raw)["content"][0]["text"] == "scripted"
    _, raw = post(api.base_url, conversation(stream=False))
    assert "script is exhausted" in json.loads(raw)["content"][0]["text"]
    assert len(api.requests) == 4
    assert len(api.side_requests) == 2 and len(api.conversation_requests) == 2


def test_other_paths_answer_harmlessly(api: FakeAnthropic) -> None:
    status, raw = post(api.base_url, conversation(), "/v1/messages/count_tokens?beta=true")
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    assert fetch("HEAD", api.base_url + "/") == (200, b"")
    assert fetch("GET", api.base_url + "/api/anything") == (200, b"{}")
    assert api.requests == []  # none of these were /v1/messages calls


def test_cli_entry_prints_url_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "devtools.fake_anthropic", "--scenario", "demo"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is listening
        assert line.startswith("FAKE_ANTHROPIC_URL=http://127.0.0.1:")
        url = line.strip().split("=", 1)[1]

        _, raw = post(url, conversation(stream=False))
        assert json.loads(raw)["content"][0]["name"] == "Bash"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
