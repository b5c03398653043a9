"""worker.parser against real `claude -p --output-format stream-json` captures.

The captures live in tests/fixtures/cli/*.jsonl (written by devtools/capture.py, with a
`*.meta.json` beside each and the CLI version in VERSION). Every capture present at
collection time is checked; scenario-specific checks skip when their capture is absent.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.blocks import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from shared.events import (
    DATA_MODELS,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    InitData,
    MessageData,
    ResultData,
    RetryData,
    RunStatus,
)
from worker.outcome import RunObservations, final_events
from worker.parser import Parsed, parse_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cli"
CAPTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.jsonl"))

if not CAPTURE_NAMES:
    pytest.skip(
        f"no CLI captures (*.jsonl) in {FIXTURES}; run `python -m devtools.capture "
        "--out tests/fixtures/cli` to record them",
        allow_module_level=True,
    )


@dataclass(frozen=True)
class Capture:
    name: str
    raw: list[bytes]
    objects: list[Any]  # json of each line, None when not JSON
    parsed: list[Parsed]

    @property
    def events(self) -> list[Event]:
        return [event for parsed in self.parsed for event in parsed.events]

    def of_type(self, event_type: EventType) -> list[Event]:
        return [e for e in self.events if e.type is event_type]

    def lines_of_type(self, line_type: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if isinstance(o, dict) and o.get("type") == line_type]

    def messages(self) -> list[MessageData]:
        out = []
        for event in self.of_type(EventType.MESSAGE):
            assert isinstance(event.data, MessageData)
            out.append(event.data)
        return out

    def errors(self) -> list[ErrorData]:
        out = []
        for event in self.of_type(EventType.ERROR):
            assert isinstance(event.data, ErrorData)
            out.append(event.data)
        return out

    def results(self) -> list[ResultData]:
        out = []
        for event in self.of_type(EventType.RESULT):
            assert isinstance(event.data, ResultData)
            out.append(event.data)
        return out


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


@functools.cache
def load(name: str) -> Capture:
    raw = [line for line in (FIXTURES / f"{name}.jsonl").read_bytes().split(b"\n")]
    if raw and raw[-1] == b"":
        raw.pop()  # the file's final newline
    return Capture(
        name=name,
        raw=raw,
        objects=[_json_or_none(line) for line in raw],
        parsed=[parse_line(line) for line in raw],
    )


def require(name: str) -> Capture:
    if name not in CAPTURE_NAMES:
        pytest.skip(f"capture {name}.jsonl is not in {FIXTURES}")
    return load(name)


def _has_tool_use(capture_name: str) -> bool:
    return any(
        isinstance(block, dict) and block.get("type") == "tool_use"
        for obj in load(capture_name).lines_of_type("assistant")
        for block in _content(obj)
    )


def _content(obj: dict[str, Any]) -> list[Any]:
    message = obj.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _text(message: MessageData) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


# --------------------------------------------------------------------------- every capture


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_every_line_parses_into_well_formed_events(name: str) -> None:
    capture = load(name)
    for raw, parsed in zip(capture.raw, capture.parsed, strict=True):
        assert parsed.events or parsed.skipped, raw[:200]
        for event in parsed.events:
            assert isinstance(event.data, DATA_MODELS[event.type])
            # what the publisher does with every event
            reparsed = DATA_MODELS[event.type].model_validate_json(event.data.model_dump_json())
            assert reparsed == event.data
    # real CLI output must be understood: no fallbacks, no unknown line types
    for error in capture.errors():
        assert error.code is not ErrorCode.MISSING_TYPE, error
        assert not error.message.startswith("could not parse"), error
    for parsed in capture.parsed:
        assert not (parsed.skipped or "").startswith("unknown type"), parsed.skipped


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_each_line_yields_the_events_its_type_calls_for(name: str) -> None:
    capture = load(name)
    for obj, parsed in zip(capture.objects, capture.parsed, strict=True):
        types = [e.type for e in parsed.events]
        if not isinstance(obj, dict):
            assert types in ([EventType.TEXT], []), obj
            continue
        line_type = obj.get("type")
        if line_type == "assistant":
            expected = [EventType.ERROR] if obj.get("error") else [EventType.MESSAGE]
            assert types == expected, obj
        elif line_type == "user":
            assert types in ([EventType.MESSAGE], []), obj
            if obj.get("isMeta") is True:
                assert types == []
        elif line_type == "system":
            by_subtype = {"init": [EventType.INIT], "api_retry": [EventType.RETRY]}
            assert types == by_subtype.get(str(obj.get("subtype")), []), obj
        elif line_type == "stream_event":
            assert types == [EventType.STREAM_EVENT]
        elif line_type == "result":
            assert types[0] is EventType.RESULT
            assert types[1:] in ([], [EventType.ERROR])


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_one_result_event_per_result_line(name: str) -> None:
    capture = load(name)
    result_lines = capture.lines_of_type("result")
    results = capture.results()
    assert len(results) == len(result_lines)
    for obj, data in zip(result_lines, results, strict=True):
        assert data.claude_session_id == obj.get("session_id")
        assert data.subtype == obj.get("subtype")
        assert data.num_turns == obj.get("num_turns")
        if obj.get("is_error") is True:
            assert data.is_error is True
        if isinstance(obj.get("total_cost_usd"), int | float):
            assert data.total_cost_usd == pytest.approx(obj["total_cost_usd"])


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_init_line_yields_init_with_session_id(name: str) -> None:
    capture = load(name)
    init_lines = [o for o in capture.lines_of_type("system") if o.get("subtype") == "init"]
    inits = capture.of_type(EventType.INIT)
    assert len(inits) == len(init_lines)
    for obj, event in zip(init_lines, inits, strict=True):
        assert isinstance(event.data, InitData)
        assert event.data.claude_session_id
        assert event.data.claude_session_id == obj["session_id"]
        assert event.data.model == obj.get("model")
        assert event.data.tools == obj.get("tools", [])
    if init_lines and capture.results():
        # the run's claude session id is the same at both ends
        init = inits[0].data
        assert isinstance(init, InitData)
        assert capture.results()[-1].claude_session_id == init.claude_session_id


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_stream_events_pass_through_unchanged(name: str) -> None:
    capture = load(name)
    lines = capture.lines_of_type("stream_event")
    events = capture.of_type(EventType.STREAM_EVENT)
    assert [e.data.model_dump()["event"] for e in events] == [o["event"] for o in lines]


@pytest.mark.parametrize("name", [n for n in CAPTURE_NAMES if _has_tool_use(n)])
def test_tool_captures_have_matching_tool_use_and_result(name: str) -> None:
    capture = load(name)
    blocks = [block for message in capture.messages() for block in message.content]
    uses = [b for b in blocks if isinstance(b, ToolUseBlock)]
    results = [b for b in blocks if isinstance(b, ToolResultBlock)]
    assert uses, "a tool capture must yield a tool_use block"
    assert results, "a tool capture must yield a tool_result block"
    assert {r.tool_use_id for r in results} <= {u.id for u in uses}
    for use in uses:
        assert use.name
        assert isinstance(use.input, dict)
    # tool results come on user messages, tool uses on assistant messages
    for message in capture.messages():
        if any(isinstance(b, ToolResultBlock) for b in message.content):
            assert message.role == "user"
        if any(isinstance(b, ToolUseBlock) for b in message.content):
            assert message.role == "assistant"


def _meta(name: str) -> dict[str, Any] | None:
    path = FIXTURES / f"{name}.meta.json"
    if not path.exists():
        return None
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


@pytest.mark.parametrize("name", CAPTURE_NAMES)
def test_capture_outcome_matches_how_the_cli_ended(name: str) -> None:
    """Parser + outcome on real output: the run status follows the result and exit code."""
    meta = _meta(name)
    if meta is None or not isinstance(meta.get("exit_code"), int):
        pytest.skip(f"{name}.meta.json with an exit_code is missing")
    capture = load(name)
    seen = RunObservations()
    for event in capture.events:
        seen.observe(event)
    events, status = final_events(
        seen,
        exit_code=meta["exit_code"],
        duration_s=float(meta.get("duration_s", 0.0)),
        stderr_tail=str(meta.get("stderr_tail", "")),
    )
    results = capture.results()
    should_succeed = meta["exit_code"] == 0 and bool(results) and not results[-1].is_error
    assert status is (RunStatus.SUCCEEDED if should_succeed else RunStatus.FAILED)
    assert events[-1].type is EventType.FINISHED
    if results:
        assert seen.claude_session_id == results[-1].claude_session_id
    if not results and meta["exit_code"] != 0:
        error = events[0].data
        assert isinstance(error, ErrorData)
        assert error.code is ErrorCode.CLI_EXIT
        assert str(meta.get("stderr_tail", "")).strip() in error.message


# --------------------------------------------------------------------------- named captures


@pytest.mark.parametrize("name", ["bash-allowed", "bash-allowed-partial", "demo"])
def test_allowed_bash_tool_ran(name: str) -> None:
    capture = require(name)
    uses = [b for m in capture.messages() for b in m.content if isinstance(b, ToolUseBlock)]
    results = [b for m in capture.messages() for b in m.content if isinstance(b, ToolResultBlock)]
    assert [u.name for u in uses] == ["Bash"]
    assert "command" in uses[0].input
    assert len(results) == 1
    assert results[0].tool_use_id == uses[0].id
    assert results[0].is_error is False
    assert capture.results()[-1].is_error is False


def test_bash_denied_reports_error_result_and_denial() -> None:
    capture = require("bash-denied")
    results = [b for m in capture.messages() for b in m.content if isinstance(b, ToolResultBlock)]
    assert len(results) == 1
    assert results[0].is_error is True
    final = capture.results()[-1]
    assert final.is_error is False  # the run itself succeeded; the tool was refused
    assert len(final.permission_denials) == 1
    assert final.permission_denials[0]["tool_name"] == "Bash"
    # the permission_denied system line is informational only
    assert any(p.skipped == "system/permission_denied" for p in capture.parsed)


@pytest.mark.parametrize("name", ["thinking", "thinking-partial"])
def test_thinking_capture_keeps_thinking_with_signature(name: str) -> None:
    capture = require(name)
    thinking = [b for m in capture.messages() for b in m.content if isinstance(b, ThinkingBlock)]
    assert thinking
    for block in thinking:
        assert block.thinking
        assert block.signature
    # thinking_tokens progress lines are not events
    assert all(
        p.skipped == "system/thinking_tokens"
        for o, p in zip(capture.objects, capture.parsed, strict=True)
        if isinstance(o, dict) and o.get("subtype") == "thinking_tokens"
    )


@pytest.mark.parametrize("name", ["text", "model-flag", "dashdash-prompt"])
def test_text_capture_is_a_plain_successful_turn(name: str) -> None:
    capture = require(name)
    assert not capture.errors()
    assert not capture.of_type(EventType.TEXT)
    assistant_texts = [_text(m) for m in capture.messages() if m.role == "assistant"]
    assert any(assistant_texts)
    final = capture.results()[-1]
    assert final.is_error is False
    assert final.result in assistant_texts


def test_model_flag_capture_reports_the_model() -> None:
    capture = require("model-flag")
    init = capture.of_type(EventType.INIT)[0].data
    assert isinstance(init, InitData)
    assert init.model == "claude-sonnet-4-5"
    assert all(m.model == "claude-sonnet-4-5" for m in capture.messages() if m.role == "assistant")


@pytest.mark.parametrize(
    "name", ["text-partial", "thinking-partial", "bash-allowed-partial", "demo"]
)
def test_partial_capture_has_stream_events(name: str) -> None:
    capture = require(name)
    kinds = [
        e.data.model_dump()["event"].get("type") for e in capture.of_type(EventType.STREAM_EVENT)
    ]
    assert "message_start" in kinds
    assert "content_block_delta" in kinds
    assert "message_stop" in kinds


# --------------------------------------------------------------------------- failures


def _assistant_error_texts(capture: Capture) -> list[str]:
    texts: list[str] = []
    for obj in capture.lines_of_type("assistant"):
        if obj.get("error"):
            texts.extend(
                b["text"]
                for b in _content(obj)
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
    return texts


def _params(names: Sequence[str], why: str) -> list[Any]:
    """The names, or one skipped placeholder saying which captures are missing."""
    return list(names) or [pytest.param("missing", marks=pytest.mark.skip(reason=why))]


AUTH_CAPTURES = [n for n in ("no-api-key", "not-logged-in", "error-401") if n in CAPTURE_NAMES]
ASSISTANT_ERROR_CAPTURES = [n for n in CAPTURE_NAMES if _assistant_error_texts(load(n))]
ERROR_CAPTURES = [n for n in CAPTURE_NAMES if n.startswith("error-") and not n.endswith("-ok")]


@pytest.mark.parametrize(
    "name", _params(AUTH_CAPTURES, "no auth-failure capture (no-api-key, error-401) yet")
)
def test_auth_failure_capture_is_an_error_not_a_message(name: str) -> None:
    capture = load(name)
    codes = [e.code for e in capture.errors()]
    assert ErrorCode.AUTHENTICATION in codes or ErrorCode.RESULT_ERROR in codes, codes
    if _assistant_error_texts(capture):
        assert ErrorCode.AUTHENTICATION in codes
    for message in capture.messages():
        text = _text(message)
        assert "Not logged in" not in text
        assert "Failed to authenticate" not in text
    assert capture.results()[-1].is_error is True


@pytest.mark.parametrize(
    "name",
    _params(ASSISTANT_ERROR_CAPTURES, "no capture has an assistant line with a top-level error"),
)
def test_assistant_error_lines_become_errors_not_messages(name: str) -> None:
    capture = load(name)
    message_texts = {_text(m) for m in capture.messages()}
    for text in _assistant_error_texts(capture):
        assert text not in message_texts
        assert any(e.message == text for e in capture.errors())
    assert not [m for m in capture.messages() if m.model == "<synthetic>"]


@pytest.mark.parametrize("name", _params(ERROR_CAPTURES, "no API error capture (error-*) yet"))
def test_api_error_capture_reports_a_failure(name: str) -> None:
    capture = load(name)
    assert capture.results(), "an API error capture still ends with a result line"
    final = capture.results()[-1]
    assert final.is_error is True
    assert any(e.code is ErrorCode.RESULT_ERROR for e in capture.errors())
    assert final.result
    assert any(e.message == final.result for e in capture.errors())
    statuses = {
        o["api_error_status"]
        for o in capture.objects
        if isinstance(o, dict) and isinstance(o.get("api_error_status"), int)
    }
    for status in statuses:  # the HTTP status the CLI saw reaches clients
        assert any(e.detail.get("api_error_status") == status for e in capture.errors())


def test_error_then_retry_capture_succeeds() -> None:
    capture = require("error-429-then-ok")
    final = capture.results()[-1]
    assert final.is_error is False
    assert not capture.errors()
    # the api_retry progress line becomes a `retry` event with the CLI's figures
    (retry,) = [e.data for p in capture.parsed for e in p.events if e.type is EventType.RETRY]
    assert isinstance(retry, RetryData)
    assert (retry.attempt, retry.error_status, retry.error) == (1, 429, "rate_limit")
    assert "Recovered after a retry." in [_text(m) for m in capture.messages()]


def test_resume_missing_capture_is_an_error_result() -> None:
    capture = require("resume-missing")
    final = capture.results()[-1]
    assert final.is_error is True
    assert final.subtype == "error_during_execution"
    errors = capture.errors()
    assert [e.code for e in errors] == [ErrorCode.RESULT_ERROR]
    assert errors[0].detail["subtype"] == "error_during_execution"
    # the CLI's reason (its `errors` list) is what the error event says
    assert "No conversation found" in errors[0].message


def test_max_turns_capture_is_an_error_result() -> None:
    capture = require("max-turns")
    final = capture.results()[-1]
    assert final.subtype == "error_max_turns"
    assert final.is_error is True
    errors = capture.errors()
    assert [e.code for e in errors] == [ErrorCode.RESULT_ERROR]
    assert errors[0].detail["subtype"] == "error_max_turns"
    assert "maximum number of turns" in errors[0].message
    assert [b for m in capture.messages() for b in m.content if isinstance(b, ToolUseBlock)]


def test_resume_capture_keeps_the_resumed_session_id() -> None:
    capture = require("resume")
    meta = _meta("resume") or {}
    resumed = [a.split("=", 1)[1] for a in meta.get("argv", []) if a.startswith("--resume=")]
    if not resumed:
        pytest.skip("resume.meta.json does not record the --resume argument")
    init = capture.of_type(EventType.INIT)[0].data
    assert isinstance(init, InitData)
    assert init.claude_session_id == resumed[0]
    assert capture.results()[-1].claude_session_id == resumed[0]
    assert capture.results()[-1].is_error is False
