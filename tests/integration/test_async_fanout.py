"""The asyncio client shares one pub/sub connection among all its streams."""

from __future__ import annotations

import asyncio

import pytest
import redis

from producer.aio import AsyncClient
from producer.client import Client, RunHandle
from producer.fanout import PubSubFanout, Subscription
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory


def _subscriber_connections(raw: redis.Redis) -> int:
    """Connections to the test database holding subscriptions (other dbs may be in use)."""
    db = str(raw.connection_pool.connection_kwargs.get("db", 0))
    clients = raw.client_list()
    return sum(1 for c in clients if int(c.get("sub", 0)) > 0 and str(c.get("db")) == db)


def test_many_streams_share_one_connection(
    settings: Settings, client: Client, redis_client: redis.Redis
) -> None:
    sessions = [f"many-{index}" for index in range(150)]  # more than the pool's 100
    for session_id in sessions:
        client.submit(session_id=session_id, prompt="never runs: there is no worker")

    async def scenario() -> dict[str, list[Envelope]]:
        async with AsyncClient(settings) as aclient:
            subscribed: set[str] = set()
            all_subscribed = asyncio.Event()

            async def follow(session_id: str) -> list[Envelope]:
                events = []
                async for envelope in aclient.stream(session_id, stop_at_finish=True, timeout_s=60):
                    events.append(envelope)
                    # A stream replays only once subscribed: its first event proves it.
                    subscribed.add(session_id)
                    if len(subscribed) == len(sessions):
                        all_subscribed.set()
                return events

            tasks = {s: asyncio.create_task(follow(s)) for s in sessions}
            await asyncio.wait_for(all_subscribed.wait(), 60)
            assert _subscriber_connections(redis_client) == 1
            for session_id in sessions:
                await aclient.cancel(session_id)
            return {s: await t for s, t in tasks.items()}

    results = asyncio.run(scenario())
    for session_id, events in results.items():
        assert [e.type for e in events] == [
            EventType.QUEUED,
            EventType.INTERRUPTED,
            EventType.FINISHED,
        ], session_id
        assert [e.seq for e in events] == [1, 2, 3]


def test_a_stream_that_falls_behind_catches_up_from_the_log(
    settings: Settings, client: Client, start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("producer.fanout._QUEUE_SIZE", 2)
    opened: list[Subscription] = []
    open_channel = PubSubFanout.open

    async def recording_open(fanout: PubSubFanout, channel: str) -> Subscription:
        subscription = await open_channel(fanout, channel)
        opened.append(subscription)
        return subscription

    monkeypatch.setattr(PubSubFanout, "open", recording_open)
    start_worker()

    async def scenario() -> list[Envelope]:
        async with AsyncClient(settings) as aclient:
            handle = await aclient.submit(session_id="lag", prompt="FAKE: many n=60 rate=0")

            def handle_wait() -> bool:
                sync_handle = RunHandle(client, handle.session_id, handle.run_id, handle.queued_seq)
                return sync_handle.wait(timeout_s=60).status == "succeeded"

            stream = handle.stream(timeout_s=60)
            first = [await anext(stream)]
            # Stop reading while the whole run happens: the 2-slot queue overflows.
            finished = await asyncio.to_thread(lambda: client.history("lag") and handle_wait())
            assert finished
            (subscription,) = opened
            assert subscription.lagging  # live messages were dropped
            return first + [e async for e in stream]

    events = asyncio.run(scenario())
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1].type is EventType.FINISHED
    texts = [b["text"] for e in events if e.type is EventType.MESSAGE for b in e.data["content"]]
    assert len([t for t in texts if t.startswith("t=")]) == 60


def _concurrent_submits(settings: Settings, count: int) -> list[object]:
    async def scenario() -> list[object]:
        async with AsyncClient(settings) as aclient:
            return await asyncio.gather(
                *(aclient.submit(session_id=f"burst-{i}", prompt="hi") for i in range(count)),
                return_exceptions=True,
            )

    return asyncio.run(scenario())


def test_a_burst_beyond_the_pool_waits_for_connections(settings: Settings, client: Client) -> None:
    """More concurrent commands than the pool holds wait their turn: with redis-py's own
    asyncio pool, 150 concurrent submits on one client lost 50 (RedisUnavailable: "Too
    many connections", Redis being up)."""
    small = settings.model_copy(update={"redis_max_connections": 5})
    results = _concurrent_submits(small, 150)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert all(client.session(f"burst-{i}") is not None for i in range(150))
