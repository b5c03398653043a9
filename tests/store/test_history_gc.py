"""Client.history() reads with the cyclic collector paused, and leaves it as it was;
AsyncClient.history() reads the same pages."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest
import redis
from pydantic import ValidationError

from producer import AsyncClient, Client
from shared.encode import encode_body
from shared.events import Event, EventType, TextData
from shared.runstore import RunStore
from shared.settings import Settings
from tests.store.conftest import running_run

SESSION = "gc-history"


@pytest.fixture
def log_of_3000(store: RunStore) -> str:
    """A session log of 3,001 events (three replay pages and more)."""
    run_id, token = running_run(store, SESSION)
    bodies = [
        encode_body(
            SESSION,
            run_id,
            time.time(),
            Event(type=EventType.TEXT, data=TextData(text=f"{i}")),
        )
        for i in range(3000)
    ]
    store.append(SESSION, run_id, token=token, first_index=1, bodies=bodies)
    return run_id


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection that starts while the test runs."""
    started: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)


@pytest.mark.usefixtures("log_of_3000")
def test_no_collection_runs_while_history_reads(client: Client, collections: list[int]) -> None:
    assert gc.isenabled()
    gc.collect()
    collections.clear()
    events = client.history(SESSION)
    during = list(collections)
    assert [e.seq for e in events] == list(range(1, 3002))
    assert gc.isenabled()
    # 3,001 envelopes and their pages' replies: dozens of collections with the collector
    # on (it runs every 700 new containers); paused, only the young collection that
    # follows once it is back on (the first allocation after it, here `list(...)`).
    assert during in ([], [0])


@pytest.mark.usefixtures("log_of_3000")
def test_the_collector_is_back_on_after_a_history_that_raised(
    client: Client, redis_client: redis.Redis, store: RunStore
) -> None:
    redis_client.xadd(store.keys.log(SESSION), {"e": b'{"seq": "broken"}'}, id="3002-0")
    redis_client.set(store.keys.seq(SESSION), 3002)
    with pytest.raises(ValidationError):
        client.history(SESSION)
    assert gc.isenabled()


@pytest.mark.usefixtures("log_of_3000")
def test_async_history_reads_every_page_in_order(client: Client, settings: Settings) -> None:
    async def read() -> tuple[list[int], list[int]]:
        async with AsyncClient(settings) as aclient:
            whole = [e.seq for e in await aclient.history(SESSION)]
            later = [e.seq for e in await aclient.history(SESSION, after=1500)]
            return whole, later

    whole, later = asyncio.run(read())
    assert whole == [e.seq for e in client.history(SESSION)] == list(range(1, 3002))
    assert later == list(range(1501, 3002))


def test_async_history_raises_on_a_broken_entry(
    settings: Settings, redis_client: redis.Redis, store: RunStore
) -> None:
    redis_client.xadd(store.keys.log(SESSION), {"e": b'{"seq": "broken"}'}, id="1-0")
    redis_client.set(store.keys.seq(SESSION), 1)

    async def read() -> None:
        async with AsyncClient(settings) as aclient:
            await aclient.history(SESSION)

    with pytest.raises(ValidationError):
        asyncio.run(read())
