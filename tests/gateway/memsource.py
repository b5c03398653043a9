"""An in-memory HubSource for the hub's unit tests: a session log the test appends to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from shared.events import Envelope

RUN = "r" * 32


def envelope(seq: int, type_: str = "text", run_id: str = RUN) -> Envelope:
    return Envelope(
        seq=seq, session_id="s", run_id=run_id, ts=1.25, type=type_, data={"text": f"e{seq}"}
    )


class MemorySource:
    """The hub's view of a session: `append` logs and publishes; replays can be held."""

    def __init__(self) -> None:
        self.log: list[Envelope] = []
        self.following = 0  # open follow streams (a hub's subscription)
        self.follows = 0  # follow streams ever opened
        self.replay_gate = asyncio.Event()
        self.replay_gate.set()
        self.replay_waiting = asyncio.Event()
        self.drop_cancels = 0  # a follow stream swallows this many cancellations
        self._appended = asyncio.Event()

    def append(self, *envelopes: Envelope) -> None:
        self.log.extend(envelopes)
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    async def last_seq(self, session_id: str) -> int | None:
        return self.log[-1].seq if self.log else None

    async def follow(self, session_id: str, after: int) -> AsyncIterator[Envelope]:
        self.following += 1
        self.follows += 1
        try:
            index = sum(1 for e in self.log if e.seq <= after)
            while True:
                if index < len(self.log):
                    yield self.log[index]
                    index += 1
                    continue
                try:
                    await self._appended.wait()
                except asyncio.CancelledError:
                    # As redis-py's waits can on Python 3.11 (see shared/tasks.py).
                    if self.drop_cancels == 0:
                        raise
                    self.drop_cancels -= 1
        finally:
            self.following -= 1

    async def replay(self, session_id: str, after: int) -> AsyncIterator[Envelope]:
        self.replay_waiting.set()
        await self.replay_gate.wait()
        for e in list(self.log):
            if e.seq > after:
                yield e
