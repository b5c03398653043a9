"""Fixtures of the store tier: the RunStore on the test's Redis, and both of its faces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr

from shared.events import Event, EventType, QueuedData
from shared.jobs import PromptJob, RunRequest, new_run_id
from shared.runstore import AsyncRunStore, Claimed, NewRun, RunStore
from shared.settings import Settings
from tests.redis_server import RedisServer

Call = Callable[..., Any]


def new_run(session_id: str, prompt: str = "hi") -> NewRun:
    """A run to submit: a prompt job of the session, with its `queued` event."""
    request = RunRequest(
        run_id=new_run_id(),
        submitted_at=time.time(),
        job=PromptJob(session_id=session_id, prompt=prompt),
    )
    queued = Event(type=EventType.QUEUED, data=QueuedData(profile="readonly"))
    return NewRun(request=request, queued=queued, rq_timeout_s=300, result_ttl_s=600)


def running_run(store: RunStore, session_id: str, profile: str = "readonly") -> tuple[str, str]:
    """A run of the session, submitted and claimed: its run id and fencing token."""
    request = RunRequest(
        run_id=new_run_id(),
        submitted_at=time.time(),
        job=PromptJob(session_id=session_id, prompt="p"),
    )
    queued = Event(type=EventType.QUEUED, data=QueuedData(profile=profile))
    store.submit(NewRun(request=request, queued=queued, rq_timeout_s=60, result_ttl_s=60))
    claim = store.claim(session_id, request.run_id, worker="w", host="h")
    assert isinstance(claim, Claimed)
    return request.run_id, claim.token


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


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, redis.Redis]]:
    """A redis-server of the test's own (tests/redis_server.py): settings that name it and
    a client. Its script cache and its command counts are this test's alone."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        yield settings.model_copy(update={"redis_url": SecretStr(server.url)}), client
    finally:
        client.close()
        server.stop()


def calls(client: redis.Redis, command: str) -> int:
    """How many times the server ran `command` (INFO commandstats; `own` servers only)."""
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
