"""Session hubs: one stream per session, its frames handed to every client, no gap at
the seam where a client that replays from the log attaches to the live stream."""

from __future__ import annotations

import asyncio
import re

from gateway.feed import HubFeed
from gateway.hub import Hubs
from gateway.sse import SseStats
from shared.backoff import Backoff
from tests.gateway.memsource import MemorySource, envelope

_ID = re.compile(rb"^id: (\d+)\r\n", re.MULTILINE)


class Reader:
    """Reads a feed's chunks in a task, as the response would; waits on seqs."""

    def __init__(self, feed: HubFeed) -> None:
        self.feed = feed
        feed.join()  # as the response does before it starts
        self.seqs: list[int] = []
        self.chunks: list[bytes] = []
        self._progress = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for chunk in self.feed.chunks():
                self.chunks.append(chunk)
                self.seqs.extend(int(m) for m in _ID.findall(chunk))
                self._progress.set()
        finally:
            self.feed.leave()
            self._progress.set()

    async def reached(self, seq: int) -> None:
        while not (self.seqs and self.seqs[-1] >= seq) and not self.task.done():
            self._progress.clear()
            await self._progress.wait()


def _hubs(capacity: int = 1000) -> tuple[MemorySource, Hubs, SseStats]:
    source = MemorySource()
    return source, Hubs(source, Backoff(), capacity), SseStats(capacity=capacity)


def test_a_client_joining_mid_run_gets_every_event_once_across_the_seam() -> None:
    async def scenario() -> None:
        source, hubs, stats = _hubs()
        source.append(*[envelope(i) for i in range(1, 6)])
        first = Reader(HubFeed(hubs, stats=stats, session_id="s"))
        await first.reached(5)
        source.append(*[envelope(i) for i in range(6, 21)])
        await first.reached(20)
        source.replay_gate.clear()  # the joiner's replay waits: live events go on
        source.replay_waiting.clear()
        late = Reader(HubFeed(hubs, stats=stats, session_id="s", after=3))
        await source.replay_waiting.wait()  # attached at 20, its replay not read yet
        source.append(*[envelope(i) for i in range(21, 31)])
        await first.reached(30)
        source.replay_gate.set()  # the log now holds 1..30: the replay stops at 20
        await late.reached(30)
        source.append(*[envelope(i) for i in range(31, 41)])
        await first.reached(40)
        await late.reached(40)
        assert first.seqs == list(range(1, 41))
        assert late.seqs == list(range(4, 41))
        assert source.follows == 1  # one stream for both clients
        for reader in (first, late):
            reader.task.cancel()

    asyncio.run(scenario())


def test_many_clients_share_one_stream_and_one_encoding_per_frame() -> None:
    async def scenario() -> None:
        source, hubs, stats = _hubs()
        readers = [Reader(HubFeed(hubs, stats=stats, session_id="s")) for _ in range(50)]
        hub = hubs.get("s")
        assert hub is not None
        assert await hub.started()
        while hub.attached < 50:
            await asyncio.sleep(0)  # each reader's first step attaches it
        source.append(envelope(1))
        for reader in readers:
            await reader.reached(1)
        assert len({id(reader.chunks[0]) for reader in readers}) == 1  # encoded once
        source.append(*[envelope(i) for i in range(2, 31)])
        for reader in readers:
            await reader.reached(30)
            assert reader.seqs == list(range(1, 31))
        assert source.follows == 1
        for reader in readers:
            reader.task.cancel()
        await asyncio.gather(*(r.task for r in readers), return_exceptions=True)
        assert hubs.get("s") is None  # the last client out stopped the hub
        await hubs.wait_stopped()
        assert source.following == 0  # and its stream is closed

    asyncio.run(scenario())


def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on() -> None:
    async def scenario() -> None:
        source, hubs, stats = _hubs(capacity=5)
        fast = Reader(HubFeed(hubs, stats=stats, session_id="s"))
        stalled = HubFeed(hubs, stats=stats, session_id="s")
        chunks = stalled.chunks()
        first = asyncio.ensure_future(anext(chunks))
        source.append(envelope(1))
        assert _ID.findall(await first) == [b"1"]
        # Its writer now holds a chunk it never finishes writing (a blocked send).
        source.append(*[envelope(i) for i in range(2, 21)])
        await fast.reached(20)
        await stalled.dropped.wait()
        assert fast.seqs == list(range(1, 21))
        assert stats.dropped == 1
        assert stats.high_water <= 5
        hub = hubs.get("s")
        assert hub is not None and hub.attached == 1
        await chunks.aclose()
        stalled.leave()
        fast.task.cancel()

    asyncio.run(scenario())


def test_until_finished_and_run_id_hold_in_the_replay_and_live() -> None:
    async def scenario() -> None:
        source, hubs, stats = _hubs()
        other, mine = "a" * 32, "b" * 32
        source.append(envelope(1, run_id=other), envelope(2, run_id=mine))
        live = Reader(HubFeed(hubs, stats=stats, session_id="s", stop_at_finish=True, run_id=mine))
        await live.reached(2)
        source.append(
            envelope(3, "finished", run_id=other),
            envelope(4, run_id=mine),
            envelope(5, "finished", run_id=mine),
            envelope(6, run_id=mine),
        )
        await live.task
        assert live.seqs == [2, 4, 5]
        replayed = Reader(
            HubFeed(hubs, stats=stats, session_id="s", stop_at_finish=True, run_id=mine)
        )
        await replayed.task
        assert replayed.seqs == [2, 4, 5]
        any_run = Reader(HubFeed(hubs, stats=stats, session_id="s", stop_at_finish=True))
        await any_run.task
        assert any_run.seqs == [1, 2, 3]

    asyncio.run(scenario())


def test_a_run_bound_client_of_a_deleted_session_ends() -> None:
    async def scenario() -> None:
        _source, hubs, stats = _hubs()
        feed = HubFeed(hubs, stats=stats, session_id="s", stop_at_finish=True, run_id="b" * 32)
        reader = Reader(feed)
        await reader.task  # no seq key: the session is gone, its finished never comes
        assert reader.seqs == []

    asyncio.run(scenario())


def test_a_hub_whose_stream_drops_a_cancellation_still_stops() -> None:
    """The last client leaves while the hub's stream loses the cancel (redis-py can, on
    Python 3.11): the hub is cancelled again until it ends, so it stops following, and
    `aclose` (the gateway's shutdown) returns instead of waiting for ever."""

    async def scenario() -> None:
        source, hubs, stats = _hubs()
        source.append(envelope(1))
        source.drop_cancels = 1
        reader = Reader(HubFeed(hubs, stats=stats, session_id="s"))
        await reader.reached(1)
        reader.task.cancel()
        closing = asyncio.create_task(hubs.aclose())
        await asyncio.wait({closing}, timeout=30)  # a guard against the hang, not a measure
        assert closing.done(), "the hub never stopped: aclose is still waiting for it"
        assert source.drop_cancels == 0  # the first cancel was dropped; another ended it
        assert source.following == 0
        assert len(hubs) == 0

    asyncio.run(scenario())
