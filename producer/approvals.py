"""Answering permission requests: what an answer says and what became of it. Pure.

Both clients build their decisions here and only do the I/O themselves, so the sync
and asyncio faces cannot drift apart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producer.errors import InvalidJobError
from producer.sessions import require_session_id
from shared.events import DecisionReason
from shared.ids import is_request_id, is_run_id
from shared.runstore import AnswerOutcome, Decision, OpenRequest

__all__ = [
    "AnswerOutcome",
    "AnswerResult",
    "OpenRequest",
    "decision_for",
    "deny_message",
    "expires_in_s",
    "input_preview",
    "prepare_answer",
    "require_answer_target",
]

INPUT_PREVIEW_CHARS = 120


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """What became of an answer: see AnswerOutcome. `run_id` is None when no run was running."""

    outcome: AnswerOutcome
    session_id: str
    run_id: str | None
    request_id: str

    @property
    def delivered(self) -> bool:
        return self.outcome is AnswerOutcome.DELIVERED

    def as_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome.value,
            "session_id": self.session_id,
            "run_id": self.run_id,
            "request_id": self.request_id,
        }


def require_answer_target(session_id: str, request_id: str, run_id: str | None) -> None:
    """InvalidJobError unless these ids can name a permission request (nothing is sent)."""
    require_session_id(session_id)
    if not is_request_id(request_id):
        raise InvalidJobError(
            f"request_id: {request_id!r} is not a permission request id "
            "(1 to 128 letters, digits, '_' or '-')"
        )
    if run_id is not None and not is_run_id(run_id):
        raise InvalidJobError(f"run_id: {run_id!r} is not a run id (32 lowercase hex digits)")


def deny_message(decided_by: str | None) -> str:
    """What the CLI is told when a person denies without saying why."""
    return f"denied by {decided_by or 'a person'}"


def decision_for(
    *,
    allow: bool,
    message: str | None = None,
    updated_input: dict[str, Any] | None = None,
    decided_by: str | None = None,
) -> Decision:
    """The decision a person's answer records (InvalidJobError if a field is out of bounds)."""
    if not allow and message is None:
        message = deny_message(decided_by)
    try:
        return Decision(
            behavior="allow" if allow else "deny",
            message=message,
            updated_input=updated_input,
            decided_by=decided_by,
            reason=DecisionReason.ANSWERED,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidJobError(f"invalid answer: {problems}") from None


def prepare_answer(
    session_id: str,
    request_id: str,
    run_id: str | None,
    *,
    allow: bool,
    message: str | None,
    updated_input: dict[str, Any] | None,
    decided_by: str | None,
) -> Decision:
    """Check an answer's ids and build its decision: all a client does before its I/O."""
    require_answer_target(session_id, request_id, run_id)
    return decision_for(
        allow=allow, message=message, updated_input=updated_input, decided_by=decided_by
    )


def expires_in_s(expires_at: float, now: float | None = None) -> int:
    """Whole seconds until a request expires (0 once it has)."""
    left = expires_at - (time.time() if now is None else now)
    return max(0, int(left))


def input_preview(tool_input: dict[str, Any], limit: int = INPUT_PREVIEW_CHARS) -> str:
    """A tool input as one short line of JSON."""
    text = json.dumps(tool_input, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
