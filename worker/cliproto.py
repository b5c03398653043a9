"""The CLI's stdin protocol in stream-json input mode: what the worker writes, and the
control requests the CLI prints. Pure: bytes and typed values, no I/O.

The worker writes one JSON object per line:
- the prompt, as a `user` message;
- answers to the CLI's `can_use_tool` requests, as `control_response` lines;
- a soft interrupt of the current turn, as a `control_request` of subtype `interrupt`.
The CLI keeps reading stdin after a `result`; closing stdin is what ends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.ids import is_request_id

# Bounds on what is taken from a CLI line into an event (it is untrusted data).
MAX_TOOL_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def user_message(text: str) -> bytes:
    """The prompt (with its context block) as one stdin line."""
    return _line(
        {
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": None,
            "session_id": "default",
        }
    )


def allow(request_id: str, updated_input: dict[str, Any]) -> bytes:
    """Let the CLI run the tool (with this input: the original one unless a person changed it)."""
    response = {"behavior": "allow", "updatedInput": updated_input}
    return _success(request_id, response)


def deny(request_id: str, message: str) -> bytes:
    """Refuse the tool; the model sees `message`."""
    return _success(request_id, {"behavior": "deny", "message": message})


def unsupported(request_id: str, subtype: str) -> bytes:
    """Answer a control request this worker does not handle, so the CLI does not wait on it."""
    error = f"claude-queue does not handle control requests of subtype {subtype!r}"
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": error},
        }
    )


def interrupt(request_id: str) -> bytes:
    """Ask the CLI to end its current turn (it answers with a control_response and a result)."""
    return _line(
        {"type": "control_request", "request_id": request_id, "request": {"subtype": "interrupt"}}
    )


def _success(request_id: str, response: dict[str, Any]) -> bytes:
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        }
    )


@dataclass(frozen=True, slots=True)
class ToolPermissionAsk:
    """The CLI asks whether it may use a tool (`can_use_tool`); it waits for the answer."""

    request_id: str
    tool_name: str
    input: dict[str, Any] = field(default_factory=dict)
    tool_use_id: str | None = None
    description: str | None = None
    suggestions: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OtherControlRequest:
    """A control request of another subtype, or one we cannot key (bad request id)."""

    request_id: str
    subtype: str
    problem: str | None = None


ControlRequest = ToolPermissionAsk | OtherControlRequest


def _bounded(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def control_request(line: dict[str, Any]) -> ControlRequest | None:
    """The typed form of a `control_request` line; None if it names no request id at all."""
    request_id = line.get("request_id")
    request = line.get("request")
    if not isinstance(request_id, str) or not request_id:
        return None
    subtype = request.get("subtype") if isinstance(request, dict) else None
    subtype = subtype if isinstance(subtype, str) else "?"
    if not is_request_id(request_id):
        return OtherControlRequest(request_id, subtype, problem="its request id is not valid")
    if subtype != "can_use_tool" or not isinstance(request, dict):
        return OtherControlRequest(request_id, subtype)
    tool_name = _bounded(request.get("tool_name"), MAX_TOOL_NAME_CHARS)
    if not tool_name:
        return OtherControlRequest(request_id, subtype, problem="it names no tool")
    tool_input = request.get("input")
    suggestions = request.get("permission_suggestions")
    return ToolPermissionAsk(
        request_id=request_id,
        tool_name=tool_name,
        input=tool_input if isinstance(tool_input, dict) else {},
        tool_use_id=_bounded(request.get("tool_use_id"), MAX_TOOL_NAME_CHARS),
        description=_bounded(request.get("description"), MAX_DESCRIPTION_CHARS),
        suggestions=suggestions if isinstance(suggestions, list) else [],
    )
