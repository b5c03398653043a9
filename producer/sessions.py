"""Session management as producers see it: ids checked with the producer's own errors.

Listing, reading and deleting sessions are RunStore operations (shared/runstore);
sessions expire on their own after `event_log_ttl_s` of inactivity, since every
session key carries that TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from producer.errors import InvalidJobError, SessionBusy
from shared.events import Envelope, EventType
from shared.ids import is_session_id
from shared.runstore import SessionInfo, SessionState

__all__ = [
    "RunSummary",
    "SessionInfo",
    "SessionState",
    "busy_error",
    "queue_position",
    "require_session_id",
    "summarize_last_run",
]


def require_session_id(session_id: str) -> None:
    """Raise InvalidJobError unless `session_id` is one `submit` would accept."""
    if not is_session_id(session_id):
        raise InvalidJobError(
            f"session_id: {session_id!r} is not a session id "
            "(1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit)"
        )


def busy_error(session_id: str, *, deleting: bool = False) -> SessionBusy:
    """The SessionBusy raised when a session's pending runs refuse a submit or delete."""
    if deleting:
        return SessionBusy(
            f"session {session_id} has runs queued or running; cancel them or use --force"
        )
    return SessionBusy(f"session {session_id} has a run queued or running")


# How many of a session's last events a listing reads to describe its last run: an idle
# session's log ends with the run's `finished`, a few events after its `result`.
SUMMARY_TAIL_EVENTS = 16


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a session list shows of its last run (None where the events did not say)."""

    run_id: str
    status: str  # queued or running while pending, else the finished status
    finished_at: float | None = None
    duration_s: float | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_last_run(info: SessionInfo, tail: Sequence[Envelope]) -> RunSummary | None:
    """The session's last run, from its state and the last events of its log (`tail`).

    A pending run is the last run (queued or running, as the session's state says). Else
    the last `finished` in the tail names it, with its `result` if the tail holds it.
    """
    if info.pending_runs and info.state is not SessionState.IDLE:
        return RunSummary(run_id=info.pending_runs[0], status=info.state.value)
    finished = next((e for e in reversed(tail) if e.type is EventType.FINISHED), None)
    if finished is None:
        return None
    result = next(
        (
            e
            for e in reversed(tail)
            if e.type is EventType.RESULT and e.run_id == finished.run_id and e.seq < finished.seq
        ),
        None,
    )
    data, outcome = finished.data, (result.data if result is not None else {})
    usage = outcome.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return RunSummary(
        run_id=finished.run_id,
        status=str(data.get("status", "unknown")),
        finished_at=finished.ts,
        duration_s=_number(data.get("duration_s")),
        cost_usd=_number(outcome.get("total_cost_usd")),
        num_turns=_whole(outcome.get("num_turns")),
        input_tokens=_whole(usage.get("input_tokens")),
        output_tokens=_whole(usage.get("output_tokens")),
    )


def queue_position(queued_job_ids: Sequence[object], run_id: str) -> int | None:
    """How many jobs wait ahead of `run_id` in a queue read head first; None if absent."""
    for index, job_id in enumerate(queued_job_ids):
        text = job_id.decode(errors="replace") if isinstance(job_id, bytes) else job_id
        if text == run_id:
            return index
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
