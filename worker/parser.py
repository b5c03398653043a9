"""Turn one line of `claude --output-format stream-json` into events. Pure: no I/O.

`parse_line` never raises: whatever bytes arrive, the result is a list of events
(possibly empty) plus, for lines deliberately dropped, a note saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from shared.blocks import ContentBlock, TextBlock, parse_block
from shared.encode import EncodedEvent, surely_shallow
from shared.events import (
    ErrorCode,
    Event,
    EventType,
    InitData,
    MessageData,
    RateLimitData,
    ResultData,
    RetryData,
    StreamEventData,
    TextData,
)
from shared.trusted import trusted
from worker.cliproto import ControlRequest, control_request
from worker.errors import error_event

# Rate-limit statuses that mean "you may go on": no event for those.
_RATE_LIMIT_OK = frozenset({"allowed", "allowed_warning"})
# Text the CLI injects as a user turn when a skill runs; it is not the user's message.
_SKILL_PROMPT_PREFIXES = ("Base directory for this skill:",)
_PREVIEW_CHARS = 500
_decode_json = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class Parsed:
    """The events a line produced, or why it produced none; or a control request of the
    CLI's (it waits for an answer on stdin: the runner's business, not an event yet)."""

    events: list[Event] = field(default_factory=list)
    skipped: str | None = None
    control: ControlRequest | None = None


def _event(event_type: EventType, data: Any) -> Event:
    return trusted(Event, {"type": event_type, "data": data})


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _blocks(content: Any) -> list[ContentBlock]:
    if isinstance(content, str):
        return [TextBlock(text=content)]
    if isinstance(content, list):
        return [parse_block(block) for block in content]
    return []


def _text_of(blocks: list[ContentBlock]) -> str:
    return "".join(block.text for block in blocks if isinstance(block, TextBlock))


def _is_skill_injection(line: dict[str, Any], blocks: list[ContentBlock]) -> bool:
    if line.get("isMeta") is True or line.get("isSynthetic") is True:
        return True
    text = _text_of(blocks).lstrip()
    return text.startswith(_SKILL_PROMPT_PREFIXES)


def _message(line: dict[str, Any], role: str) -> Parsed:
    message = _dict_or_none(line.get("message")) or {}
    blocks = _blocks(message.get("content"))
    if role == "user" and _is_skill_injection(line, blocks):
        return Parsed(skipped="skill prompt injection")
    top_level_error = line.get("error")
    if role == "assistant" and top_level_error:
        # e.g. "Not logged in": the CLI phrases an error as an assistant message.
        code = (
            ErrorCode.AUTHENTICATION
            if top_level_error == "authentication_failed"
            else ErrorCode.CLI_ERROR
        )
        text = _text_of(blocks) or str(top_level_error)
        detail = {"error": top_level_error}
        if line.get("api_error_status") is not None:
            detail["api_error_status"] = line.get("api_error_status")
        return Parsed([error_event(code, text, **detail)])
    # Every value checked here (the blocks by their models): no second validation.
    data = trusted(
        MessageData,
        {
            "role": "assistant" if role == "assistant" else "user",
            "content": blocks,
            "message_id": _str_or_none(message.get("id")),
            "model": _str_or_none(message.get("model")),
            "parent_tool_use_id": _str_or_none(line.get("parent_tool_use_id")),
            "stop_reason": _str_or_none(message.get("stop_reason")),
            "usage": _dict_or_none(message.get("usage")),
        },
    )
    return Parsed([_event(EventType.MESSAGE, data)])


def _result(line: dict[str, Any]) -> Parsed:
    subtype = _str_or_none(line.get("subtype"))
    result_text = _str_or_none(line.get("result"))
    # is_error wins over a "success" subtype; an error_* subtype is an error either way.
    is_error = line.get("is_error") is True or (subtype or "").startswith("error")
    denials = line.get("permission_denials")
    data = ResultData(
        subtype=subtype,
        is_error=is_error,
        result=result_text,
        claude_session_id=_str_or_none(line.get("session_id")),
        total_cost_usd=_float_or_none(line.get("total_cost_usd")),
        usage=_dict_or_none(line.get("usage")),
        num_turns=_int_or_none(line.get("num_turns")),
        duration_ms=_int_or_none(line.get("duration_ms")),
        permission_denials=denials if isinstance(denials, list) else [],
    )
    events = [_event(EventType.RESULT, data)]
    if is_error:
        # e.g. a failed --resume: {"subtype": "error_during_execution", "errors": ["No ..."]}
        errors = line.get("errors")
        listed = (
            "; ".join(e for e in errors if isinstance(e, str)) if isinstance(errors, list) else ""
        )
        message = result_text or listed or f"the CLI reported an error result ({subtype})"
        detail: dict[str, Any] = {"subtype": subtype}
        if line.get("api_error_status") is not None:
            detail["api_error_status"] = line.get("api_error_status")
        events.append(error_event(ErrorCode.RESULT_ERROR, message, **detail))
    return Parsed(events)


def _system(line: dict[str, Any]) -> Parsed:
    subtype = line.get("subtype")
    if subtype == "api_retry":
        # Without this a client sees nothing while the CLI backs off for minutes.
        retry = RetryData(
            attempt=_int_or_none(line.get("attempt")),
            max_retries=_int_or_none(line.get("max_retries")),
            retry_delay_ms=_int_or_none(line.get("retry_delay_ms")),
            error_status=_int_or_none(line.get("error_status")),
            error=_str_or_none(line.get("error")),
        )
        return Parsed([_event(EventType.RETRY, retry)])
    if subtype != "init":
        return Parsed(skipped=f"system/{subtype}")
    tools = line.get("tools")
    data = InitData(
        claude_session_id=_str_or_none(line.get("session_id")),
        model=_str_or_none(line.get("model")),
        cwd=_str_or_none(line.get("cwd")),
        permission_mode=_str_or_none(line.get("permissionMode")),
        tools=[t for t in tools if isinstance(t, str)] if isinstance(tools, list) else [],
        cli_version=_str_or_none(line.get("claude_code_version")),
    )
    return Parsed([_event(EventType.INIT, data)])


def _rate_limit(line: dict[str, Any]) -> Parsed:
    info = _dict_or_none(line.get("rate_limit_info")) or {}
    status = _str_or_none(info.get("status")) or "unknown"
    if status in _RATE_LIMIT_OK:
        return Parsed(skipped=f"rate limit {status}")
    data = RateLimitData(
        status=status,
        limit_type=_str_or_none(info.get("rateLimitType")),
        resets_at=_int_or_none(info.get("resetsAt")),
        info=info,
    )
    return Parsed([_event(EventType.RATE_LIMIT, data)])


def _error_line(line: dict[str, Any]) -> Parsed:
    raw = line.get("error")
    message = (
        _str_or_none(raw)
        or _str_or_none((_dict_or_none(raw) or {}).get("message"))
        or _str_or_none(line.get("message"))
        or "the CLI reported an error"
    )
    return Parsed([error_event(ErrorCode.CLI_ERROR, message, line=line)])


def _stream_event(line: dict[str, Any]) -> Parsed:
    data = trusted(
        StreamEventData,
        {
            "event": _dict_or_none(line.get("event")) or {},
            "parent_tool_use_id": _str_or_none(line.get("parent_tool_use_id")),
        },
    )
    return Parsed([_event(EventType.STREAM_EVENT, data)])


class _StreamLine(msgspec.Struct):
    """The parts of a stream_event line its event is made of (unknown keys skipped)."""

    type: str
    event: msgspec.Raw = msgspec.Raw()
    parent_tool_use_id: Any = None


_decode_stream_line = msgspec.json.Decoder(_StreamLine).decode
_STREAM_PREFIX = b'{"type":"stream_event",'


def stream_event_as_printed(raw: bytes) -> EncodedEvent | None:
    """A stream_event line's event with its `event` object kept as the CLI printed it,
    or None: then `parse_line` makes the event.

    Nearly every line of a run is one of these, and its `event` is only ever passed on:
    decoding it into dicts and encoding them again was half of a work horse's time per
    line. Taken as printed only when the JSON is in the CLI's own compact form and
    everything a reader needs holds: msgspec has checked the line's syntax (including
    the `event` it skips over, and any lone surrogate, which it refuses), the `event`
    is an object, valid UTF-8, and shallow enough for pydantic to write again. A
    reader decodes the same object either way (tests/unit/test_stream_passthrough.py),
    with one exception: a number past a double's range (`1e400`), which `parse_line`
    writes as null, reads as infinity here. Telling those apart would mean decoding.
    """
    if not raw.startswith(_STREAM_PREFIX):
        return None
    try:
        line = _decode_stream_line(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    event = bytes(line.event)
    if line.type != "stream_event" or not event.startswith(b"{") or not surely_shallow(event):
        return None
    if not event.isascii():
        try:
            event.decode()  # msgspec checks UTF-8 only in what it decodes, not what it skips
        except UnicodeDecodeError:
            return None
    parent = line.parent_tool_use_id
    parent_json = msgspec.json.encode(parent) if isinstance(parent, str) else b"null"
    return EncodedEvent(
        b"".join((b'{"event":', event, b',"parent_tool_use_id":', parent_json, b"}"))
    )


def _control_request(line: dict[str, Any]) -> Parsed:
    request = control_request(line)
    if request is None:
        return Parsed(skipped="control request without a request id")
    return Parsed(control=request)


def _control_response(_line: dict[str, Any]) -> Parsed:
    # The CLI's acknowledgement of one of our requests (an interrupt): nothing to publish.
    return Parsed(skipped="control response")


def _preview(raw: bytes) -> str:
    # Decoded only when an error needs it; the cut never splits a character.
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"


def parse_line(raw: bytes) -> Parsed:
    """Parse one output line (without its newline) into events."""
    try:
        # Valid UTF-8 JSON (what the CLI prints) is read straight from the bytes, at
        # twice the speed of json.loads on the decoded text (the throughput scenario's
        # lines: ~12.6 -> ~5.9 us each). Everything else takes the text path below, as
        # before: invalid UTF-8 replaced, NaN accepted, a non-JSON line kept as text.
        line = _decode_json(raw)
    except (msgspec.DecodeError, RecursionError):
        return _parse_text(raw)
    return _typed(line, raw)


def _parse_text(raw: bytes) -> Parsed:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return Parsed(skipped="blank line")
    try:
        line = json.loads(text)
    except (ValueError, RecursionError):
        return Parsed([_event(EventType.TEXT, TextData(text=text))])
    return _typed(line, raw)


def _typed(line: Any, raw: bytes) -> Parsed:
    line_type = line.get("type") if isinstance(line, dict) else None
    if not isinstance(line, dict) or not isinstance(line_type, str):
        message = "CLI printed JSON with no type"
        return Parsed([error_event(ErrorCode.MISSING_TYPE, message, line=_preview(raw))])
    try:
        return _dispatch(line_type, line)
    except Exception as exc:  # a malformed line must never take the run down
        return Parsed(
            [
                error_event(
                    ErrorCode.CLI_ERROR,
                    f"could not parse a {line_type!r} line: {exc}",
                    line=_preview(raw),
                )
            ]
        )


def _dispatch(line_type: str, line: dict[str, Any]) -> Parsed:
    if line_type in ("assistant", "user"):
        return _message(line, line_type)
    handler = _HANDLERS.get(line_type)
    if handler is None:
        return Parsed(skipped=f"unknown type {line_type!r}")
    return handler(line)


_HANDLERS = {
    "stream_event": _stream_event,
    "result": _result,
    "system": _system,
    "rate_limit_event": _rate_limit,
    "error": _error_line,
    "control_request": _control_request,
    "control_response": _control_response,
    "control_cancel_request": _control_response,
}
