"""What a StreamLoop (producer/streamloop.py) and its shells say to each other: the loop's
actions, and the inputs with which a shell answers them. Plain values, no behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from producer.cursor import Sequenced

# What a stream carries: Envelopes (clients), or Forwarded ones (the gateway's replay).
E = TypeVar("E", bound=Sequenced)


# -- actions (loop -> shell) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    pass


@dataclass(frozen=True, slots=True)
class ReadReplay:
    after: int
    upto: int | None
    count: int


@dataclass(frozen=True, slots=True)
class ReadArchive:
    after: int
    upto: int | None
    count: int


@dataclass(frozen=True, slots=True)
class WaitLive:
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ProbeSession:
    pass


@dataclass(frozen=True, slots=True)
class Deliver(Generic[E]):
    envelopes: tuple[E, ...]


@dataclass(frozen=True, slots=True)
class Reconnect:
    delay_s: float
    error: Exception  # why: for the shell's log line


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Fail:
    error: Exception


Action = (
    Subscribe
    | ReadReplay
    | ReadArchive
    | WaitLive
    | ProbeSession
    | Deliver[Any]
    | Reconnect
    | Done
    | Fail
)
IoAction = Subscribe | ReadReplay | ReadArchive | WaitLive | ProbeSession

# -- inputs (shell -> loop) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribed:
    pass


@dataclass(frozen=True, slots=True)
class ReplayPage(Generic[E]):
    envelopes: Sequence[E]


@dataclass(frozen=True, slots=True)
class ArchivePage(Generic[E]):
    envelopes: Sequence[E]
    available: bool = True  # False: the archive could not be read (the stream goes on)


@dataclass(frozen=True, slots=True)
class Live(Generic[E]):
    envelope: E


@dataclass(frozen=True, slots=True)
class LiveBatch(Generic[E]):
    """Live events the shell already held, in the order they came (a burst read at once)."""

    envelopes: Sequence[E]


@dataclass(frozen=True, slots=True)
class Lagged:
    """Live events were dropped before this stream read them (a full fan-out queue)."""


@dataclass(frozen=True, slots=True)
class Idle:
    """WaitLive ended with no live event."""


@dataclass(frozen=True, slots=True)
class SessionProbed:
    last_seq: int | None  # None: the session has no seq key (deleted or expired)


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    error: Exception


Input = (
    Subscribed
    | ReplayPage[Any]
    | ArchivePage[Any]
    | Live[Any]
    | LiveBatch[Any]
    | Lagged
    | Idle
    | SessionProbed
    | ConnectionLost
)

ANSWERS: dict[type[IoAction], tuple[type[Input], ...]] = {
    Subscribe: (Subscribed,),
    ReadReplay: (ReplayPage,),
    ReadArchive: (ArchivePage,),
    WaitLive: (Live, LiveBatch, Lagged, Idle),
    ProbeSession: (SessionProbed,),
}
