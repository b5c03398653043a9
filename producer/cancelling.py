"""Cancel outcomes and the arguments of the cancel script. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from shared.control import CancelRequest
from shared.events import (
    Envelope,
    Event,
    EventType,
    FinishedData,
    InterruptedData,
    RunStatus,
    encode_body,
)
from shared.keys import Keys
from shared.settings import Settings
from shared.store import log_write_args

# How often cancel(wait=True) re-sends the control message while it waits.
RESEND_EVERY_S = 0.5


class CancelOutcome(StrEnum):
    CANCELLED_RUNNING = "cancelled_running"
    CANCELLED_QUEUED = "cancelled_queued"
    ALREADY_FINISHED = "already_finished"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    OWNER_UNREACHABLE = "owner_unreachable"


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    session_id: str
    run_id: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"outcome": self.outcome.value, "session_id": self.session_id, "run_id": self.run_id}


class CancelWait:
    """When cancel(wait=True) re-sends and when it gives up. Pure; clients do the I/O."""

    def __init__(self, run_id: str, limit_s: float) -> None:
        now = time.monotonic()
        self.run_id = run_id
        self.deadline = now + limit_s
        self.next_send = now + RESEND_EVERY_S

    def wait_s(self) -> float | None:
        """How long to wait for the next message; None once the time is up."""
        now = time.monotonic()
        if now >= self.deadline:
            return None
        return max(0.0, min(self.deadline, self.next_send) - now)

    def is_done(self, envelope: Envelope | None) -> bool:
        """Does this live event say the run finished?"""
        return (
            envelope is not None
            and envelope.run_id == self.run_id
            and envelope.type is EventType.FINISHED
        )

    def resend_due(self) -> bool:
        now = time.monotonic()
        if now < self.next_send:
            return False
        self.next_send = now + RESEND_EVERY_S
        return True


def cancel_script_call(
    settings: Settings, keys: Keys, session_id: str, run_id: str, reason: str
) -> tuple[list[str], list[str | int | float]]:
    """KEYS and ARGV of CANCEL_LUA for one run."""
    now = time.time()
    interrupted = Event(type=EventType.INTERRUPTED, data=InterruptedData(reason=reason))
    finished = Event(
        type=EventType.FINISHED,
        data=FinishedData(status=RunStatus.INTERRUPTED, duration_s=0.0, reason=reason),
    )
    control = CancelRequest(session_id=session_id, run_id=run_id, reason=reason)
    return (
        [
            keys.run(session_id, run_id),
            keys.cancel_flag(session_id, run_id),
            keys.pending(session_id),
            keys.seq(session_id),
            keys.log(session_id),
            keys.sessions,
        ],
        [
            *log_write_args(keys, settings, session_id, run_id, now),
            keys.control(session_id, run_id),
            control.model_dump_json(),
            encode_body(session_id, run_id, now, interrupted),
            encode_body(session_id, run_id, now, finished),
        ],
    )
