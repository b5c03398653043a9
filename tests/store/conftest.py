"""Fixtures of the store tier: the RunStore on the test's Redis, and both of its faces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from shared.runstore import AsyncRunStore, RunStore
from shared.settings import Settings

Call = Callable[..., Any]


@pytest.fixture
def store(settings: Settings, redis_client: redis.Redis) -> RunStore:
    return RunStore(redis_client, settings)


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, store: RunStore, settings: Settings) -> Iterator[Call]:
    """`face("op", *args)`: the operation on the sync store, or on the asyncio store."""
    if request.param == "sync":
        yield lambda name, *args, **kwargs: getattr(store, name)(*args, **kwargs)
        return
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    astore = AsyncRunStore(client, settings)

    def call(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "replay":
            return loop.run_until_complete(_collected(astore.replay(*args, **kwargs)))
        return loop.run_until_complete(getattr(astore, name)(*args, **kwargs))

    try:
        yield call
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


async def _collected(items: Any) -> list[Any]:
    return [item async for item in items]
