"""An envelope read only to be passed on: its seq, type and run_id, and its JSON.

The gateway's SSE replay writes each logged envelope out again as it was read. Decoding
its `data` into dicts only to drop them again was most of the replay's decode: 10,003
envelopes of the bench's replay log took 46.5 ms to decode whole, 6.1 ms with `data`
skipped (a scratch probe, bench/README.md "Full runs, 2026-12-07 late night").

Skipped is not unchecked: msgspec parses `data` to its end (syntax, escapes, control
characters), the JSON must be valid UTF-8 and `data` an object, and the other fields
are typed as in the canonical envelope (shared/events.py `_Wire`). What does not take
that shape goes through `Envelope.from_json`, which decides as it always did (and
raises on anything invalid), so a Forwarded holds what an Envelope would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from shared.event_enums import EVENT_TYPE_OF
from shared.events import Envelope, EventType
from shared.gcpause import gc_paused


class Forwarded(msgspec.Struct, frozen=True):
    """A logged envelope as read: what a stream's cursor needs, and its JSON."""

    seq: int
    session_id: str
    run_id: str
    type: EventType | str  # a known type is its EventType, as in Envelope
    json: str  # the envelope's JSON, one line, as it was read

    @classmethod
    def of(cls, envelope: Envelope) -> Forwarded:
        """An envelope already decoded (the archive's, a non-canonical one)."""
        return cls(
            envelope.seq, envelope.session_id, envelope.run_id, envelope.type, envelope.to_json()
        )

    def to_json(self) -> str:
        return self.json


class _Head(msgspec.Struct, forbid_unknown_fields=True):
    """Envelope's canonical shape (shared/events.py `_Wire`), `data` left as JSON."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    session_id: str
    run_id: str
    ts: float
    type: str
    data: msgspec.Raw


_decode_head = msgspec.json.Decoder(_Head).decode


def forwarded(raw: str | bytes) -> Forwarded:
    """The envelope in raw, for passing on; raises as Envelope.from_json does."""
    try:
        head = _decode_head(raw)
        text = raw.decode() if isinstance(raw, bytes) else raw  # UTF-8, checked here
    except (msgspec.DecodeError, UnicodeDecodeError):
        return Forwarded.of(Envelope.from_json(raw))
    if memoryview(head.data)[:1].tobytes() != b"{" or "\n" in text or "\r" in text:
        return Forwarded.of(Envelope.from_json(raw))
    type_ = head.type
    return Forwarded(head.seq, head.session_id, head.run_id, EVENT_TYPE_OF.get(type_, type_), text)


def forwarded_page(raws: Sequence[str | bytes]) -> list[Forwarded]:
    """The envelopes of log entries, in order, for passing on."""
    with gc_paused():
        return [forwarded(raw) for raw in raws]
