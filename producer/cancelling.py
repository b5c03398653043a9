"""Cancel results, and when cancel(wait=True) re-sends and gives up. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass

from producer.errors import InvalidJobError
from shared.control import MAX_GRACE_S
from shared.events import Envelope, EventType
from shared.runstore import CancelOutcome

__all__ = [
    "RESEND_EVERY_S",
    "CancelOutcome",
    "CancelResult",
    "CancelWait",
    "require_grace",
    "wait_limit_s",
]

# How often cancel(wait=True) re-sends the control message while it waits.
RESEND_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    session_id: str
    run_id: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"outcome": self.outcome.value, "session_id": self.session_id, "run_id": self.run_id}


def require_grace(grace_s: float) -> None:
    """InvalidJobError unless 0 <= grace_s <= MAX_GRACE_S (checked before anything is sent)."""
    if not 0.0 <= grace_s <= MAX_GRACE_S:  # also refuses NaN
        raise InvalidJobError(f"grace_s: {grace_s!r} is not between 0 and {MAX_GRACE_S:g} seconds")


def wait_limit_s(grace_s: float, timeout_s: float | None, default_timeout_s: float) -> float:
    """How long cancel(wait=True) waits: the owner may spend the grace before it kills."""
    return grace_s + (timeout_s if timeout_s is not None else default_timeout_s)


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
