"""Ordering rules shared by the sync and asyncio streams. Pure.

A stream subscribes first, then replays the log after its cursor, then follows
the live channel. Live messages may repeat what the replay already gave
(dropped), or skip ahead when a message was missed (a gap: fetch it from the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from shared.events import Envelope, EventType, FinishedData
from shared.runstore import replies


class Verdict(Enum):
    DELIVER = "deliver"
    DUPLICATE = "duplicate"
    GAP = "gap"


class Sequenced(Protocol):
    """What the ordering rules read of an event: an Envelope, or a Forwarded one."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> EventType | str: ...

    @property
    def run_id(self) -> str: ...


@dataclass(slots=True)
class SeqCursor:
    """Last seq delivered, and when to stop."""

    last_seq: int = 0
    stop_at_finish: bool = False
    run_id: str | None = None
    done: bool = False

    def judge(self, envelope: Sequenced) -> Verdict:
        if envelope.seq <= self.last_seq:
            return Verdict.DUPLICATE
        if envelope.seq > self.last_seq + 1:
            return Verdict.GAP
        return Verdict.DELIVER

    def take(self, envelopes: Sequence[Sequenced]) -> int:
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

    def delivered(self, envelope: Sequenced) -> None:
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


# Every envelope our writers publish starts so (the append script puts the seq first).
_SEQ_HEAD = b'{"seq":'
_SEQ_DIGITS_END = len(_SEQ_HEAD) + 21  # where a seq's comma must come by (20 digits at most)


def seen_before(message: dict[str, Any] | None, last_seq: int) -> bool:
    """A pub/sub message whose envelope starts with a seq at or before last_seq.

    A stream that caught up from the log hears it all again live: those messages are
    passed over by their leading seq, undecoded (a decode is ~5-8 us an envelope). A
    message that does not start like our writers' is not judged here: it is decoded
    and validated as ever. One that claims a seq it does not hold can only be skipped,
    and the next message's gap is then filled from the log, which is the record.
    """
    if message is None or message.get("type") != "message":
        return False
    return data_seen_before(message.get("data"), last_seq)


def data_seen_before(data: object, last_seq: int) -> bool:
    """seen_before, for a published message's bytes."""
    if type(data) is not bytes or not data.startswith(_SEQ_HEAD):
        return False
    end = data.find(b",", len(_SEQ_HEAD), _SEQ_DIGITS_END)
    digits = data[len(_SEQ_HEAD) : end]
    return end > 0 and digits.isdigit() and int(digits) <= last_seq


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
