"""Ordering rules shared by the sync and asyncio streams. Pure.

A stream subscribes first, then replays the log after its cursor, then follows
the live channel. Live messages may repeat what the replay already gave
(dropped), or skip ahead when a message was missed (a gap: fetch it from the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared.events import Envelope, EventType, FinishedData
from shared.runstore import replies


class Verdict(Enum):
    DELIVER = "deliver"
    DUPLICATE = "duplicate"
    GAP = "gap"


@dataclass(slots=True)
class SeqCursor:
    """Last seq delivered, and when to stop."""

    last_seq: int = 0
    stop_at_finish: bool = False
    run_id: str | None = None
    done: bool = False

    def judge(self, envelope: Envelope) -> Verdict:
        if envelope.seq <= self.last_seq:
            return Verdict.DUPLICATE
        if envelope.seq > self.last_seq + 1:
            return Verdict.GAP
        return Verdict.DELIVER

    def take(self, envelopes: Sequence[Envelope]) -> int:
        """Deliver envelopes, each newer than the last delivered: how many are taken (all,
        unless the stopping point comes first). The same as `delivered` on each in turn."""
        if not self.stop_at_finish:  # no stopping point to look for: only the last counts
            if envelopes:
                self.last_seq = envelopes[-1].seq
            return len(envelopes)
        for taken, envelope in enumerate(envelopes, 1):
            self.delivered(envelope)
            if self.done:
                return taken
        return len(envelopes)

    def delivered(self, envelope: Envelope) -> None:
        self.last_seq = envelope.seq
        if (
            self.stop_at_finish
            and envelope.type is EventType.FINISHED
            and (self.run_id is None or envelope.run_id == self.run_id)
        ):
            self.done = True


def decode_page(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Envelope]:
    """Envelopes from one XRANGE page of a session log (see RunStore.replay_page)."""
    return replies.envelopes(entries)


def live_envelope(message: dict[str, Any] | None) -> Envelope | None:
    """The envelope carried by a pub/sub message; None for anything else."""
    if message is None or message.get("type") != "message":
        return None
    return Envelope.from_json(message["data"])


def finished_of(envelope: Envelope, run_id: str) -> FinishedData | None:
    """The run's FinishedData if this envelope is its `finished` event."""
    if envelope.type is not EventType.FINISHED or envelope.run_id != run_id:
        return None
    data = envelope.typed_data()
    assert isinstance(data, FinishedData)
    return data
