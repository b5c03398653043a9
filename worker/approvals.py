"""The permission requests of one run, as a state machine. Pure: no clock, no I/O.

The CLI asks (`can_use_tool`) and waits; the request becomes pending here, with a
deadline. It leaves exactly once: answered (the RunStore recorded a person's decision),
timed out, or because the run ended. Each way out yields the stdin line for the CLI
(when it is still listening) and the one `permission_decision` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.events import (
    DecisionReason,
    Event,
    EventType,
    PermissionDecisionData,
    PermissionRequestData,
)
from shared.runstore import Decision
from shared.runstore.calls import RUN_ENDED_MESSAGE
from worker import cliproto
from worker.truncate import truncate_json

DENIED_BY_PERSON = "The user denied this tool use."


@dataclass(frozen=True, slots=True)
class _Pending:
    request: PermissionRequestData  # as published and recorded (long strings cut)
    tool_input: dict[str, Any]  # as the CLI sent it: what an allow without changes returns
    due: float  # monotonic


@dataclass(frozen=True, slots=True)
class Resolved:
    """What deciding a request means: a line for the CLI, and the event to publish."""

    stdin: bytes
    event: Event


def timed_out(timeout_s: float) -> Decision:
    message = (
        f"Nobody answered this permission request within {timeout_s:g} s, so it was denied "
        "(CLAUDE_QUEUE_APPROVAL_TIMEOUT_S)."
    )
    return Decision(behavior="deny", message=message, reason=DecisionReason.TIMED_OUT)


RUN_ENDED = Decision(behavior="deny", message=RUN_ENDED_MESSAGE, reason=DecisionReason.RUN_ENDED)


class Approvals:
    """The pending permission requests of a run."""

    def __init__(self, timeout_s: float, max_request_bytes: int = 256 * 1024) -> None:
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self._pending: dict[str, _Pending] = {}

    def ask(
        self, ask: cliproto.ToolPermissionAsk, *, now: float, monotonic: float
    ) -> PermissionRequestData | None:
        """Make the CLI's request pending; its event data, or None for a repeated id.

        The event (and the record answerers read) carries the request with its longest
        strings cut to `max_request_bytes` (a Write tool's whole file, say); the CLI
        still gets its own input back on an allow.
        """
        if ask.request_id in self._pending:
            return None
        request = PermissionRequestData(
            request_id=ask.request_id,
            tool_name=ask.tool_name,
            input=ask.input,
            tool_use_id=ask.tool_use_id,
            description=ask.description,
            suggestions=ask.suggestions,
            expires_at=round(now + self.timeout_s, 3),
        )
        cut = truncate_json(request.model_dump(mode="json"), self.max_request_bytes)
        if cut.value is not None and cut.cut_strings:
            request = PermissionRequestData.model_validate(cut.value)
        self._pending[ask.request_id] = _Pending(request, ask.input, monotonic + self.timeout_s)
        return request

    def __bool__(self) -> bool:
        return bool(self._pending)

    def pending_ids(self) -> list[str]:
        return list(self._pending)

    def next_due(self) -> float | None:
        """The monotonic time the earliest request times out; None if none is pending."""
        return min((p.due for p in self._pending.values()), default=None)

    def expired(self, monotonic: float) -> list[str]:
        """Requests whose deadline has passed (still pending: the caller decides them)."""
        return [rid for rid, p in self._pending.items() if p.due <= monotonic]

    def resolve(self, request_id: str, decision: Decision) -> Resolved | None:
        """Take the request out with this decision; None if it is not pending (any more)."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return None
        if decision.behavior == "allow":
            stdin = cliproto.allow(request_id, decision.updated_input or pending.tool_input)
            message = decision.message
        else:
            message = decision.message or DENIED_BY_PERSON
            stdin = cliproto.deny(request_id, message)
        data = PermissionDecisionData(
            request_id=request_id,
            behavior=decision.behavior,
            message=message,
            decided_by=decision.decided_by,
            reason=decision.reason,
        )
        return Resolved(stdin, Event(type=EventType.PERMISSION_DECISION, data=data))
