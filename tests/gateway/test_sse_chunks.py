"""A feed writes every queued frame in one chunk, with ServerSentEvent's exact bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from gateway.sse import ClientFeed, SseStats, encode_frame
from shared.events import Envelope

RUN = "r" * 32


def _envelope(seq: int, type_: str = "text", data: dict[str, object] | None = None) -> Envelope:
    return Envelope(seq=seq, session_id="s", run_id=RUN, ts=1.25, type=type_, data=data or {})


async def _envelopes(count: int) -> AsyncIterator[Envelope]:
    for seq in range(1, count + 1):
        yield _envelope(seq, data={"text": f"event {seq}"})


def _reference(envelope: Envelope) -> bytes:
    sse = ServerSentEvent(
        data=envelope.model_dump_json(), event=str(envelope.type), id=str(envelope.seq)
    )
    return sse.encode()


def test_a_frame_has_the_bytes_of_a_server_sent_event() -> None:
    samples = [
        _envelope(1),
        _envelope(7, "finished", {"status": "ok", "text": "two\nlines\r\nand é ✓"}),
        _envelope(8, "a-newer-type", {"nested": {"list": [1, 2.5, None]}}),
        _envelope(9, "broken\ntype", {"x": "\u2028"}),
    ]
    for envelope in samples:
        assert encode_frame(envelope) == _reference(envelope)
    assert encode_frame(samples[0]).startswith(b"id: 1\r\nevent: text\r\ndata: {")
    assert b"\n\n" not in encode_frame(samples[1])[:-4]  # the JSON's newlines are escaped


def test_a_replay_is_written_in_few_chunks_with_every_frame_in_order() -> None:
    async def scenario() -> tuple[list[bytes], SseStats]:
        stats = SseStats(capacity=1000)
        feed = ClientFeed(_envelopes(500), stats=stats, session_id="s")
        reader = asyncio.create_task(feed.read())
        chunks = [chunk async for chunk in feed.chunks()]
        await reader
        return chunks, stats

    chunks, stats = asyncio.run(scenario())
    expected = b"".join(
        _reference(_envelope(seq, data={"text": f"event {seq}"})) for seq in range(1, 501)
    )
    assert b"".join(chunks) == expected
    assert len(chunks) < 500 // 10  # batches, not a write per frame
    assert stats.dropped == 0
    assert stats.high_water <= 64


def test_a_writer_takes_what_is_queued_without_waiting_for_more() -> None:
    async def scenario() -> list[list[int]]:
        gate = asyncio.Event()

        async def two_then_wait() -> AsyncIterator[Envelope]:
            yield _envelope(1)
            yield _envelope(2)
            await gate.wait()  # nothing more until the first batch was written
            yield _envelope(3)

        feed = ClientFeed(two_then_wait(), stats=SseStats(capacity=100), session_id="s")
        reader = asyncio.create_task(feed.read())
        seen: list[list[int]] = []
        while (batch := await feed.next_batch()) is not None:
            seen.append([envelope.seq for envelope in batch])
            gate.set()
        await reader
        return seen

    assert asyncio.run(scenario()) == [[1, 2], [3]]


def test_a_feed_of_capacity_one_still_keeps_up() -> None:
    async def scenario() -> tuple[list[int], SseStats]:
        stats = SseStats(capacity=1)
        feed = ClientFeed(_envelopes(30), stats=stats, session_id="s")
        reader = asyncio.create_task(feed.read())
        seqs: list[int] = []
        while (batch := await feed.next_batch()) is not None:
            seqs.extend(envelope.seq for envelope in batch)
        await reader
        return seqs, stats

    seqs, stats = asyncio.run(scenario())
    assert seqs == list(range(1, 31))
    assert stats.dropped == 0


def test_an_event_the_source_waited_for_is_handed_to_the_writer_at_once() -> None:
    async def scenario() -> list[list[int]]:
        async def live() -> AsyncIterator[Envelope]:
            for seq in range(1, 6):
                await asyncio.sleep(0)  # as a live event: the source waits for each one
                yield _envelope(seq)

        feed = ClientFeed(live(), stats=SseStats(capacity=100), session_id="s")
        reader = asyncio.create_task(feed.read())
        seen: list[list[int]] = []
        while (batch := await feed.next_batch()) is not None:
            seen.append([envelope.seq for envelope in batch])
        await reader
        return seen

    assert asyncio.run(scenario()) == [[1], [2], [3], [4], [5]]
