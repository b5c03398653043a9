"""Scripts queued on a pipeline (submit; a worker withdrawing its warm advertisements)
load themselves in the pipeline's own round trip, with no SCRIPT EXISTS first.

On a redis-server of the test's own (tests/redis_server.py): its script cache and its
command counts are this test's alone, so SCRIPT FLUSH and INFO commandstats are exact.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from shared.events import EventType
from shared.runstore import AsyncRunStore, NewRun, RunStore, Submitted
from shared.runstore.calls import Script
from shared.settings import Settings
from tests.store.conftest import calls, new_run


def _submit(settings: Settings, run: NewRun, face: str) -> Any:
    if face == "sync":
        with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
            return RunStore(client, settings).submit(run)

    async def submit() -> Any:
        client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            return await AsyncRunStore(client, settings).submit(run)
        finally:
            await client.aclose()

    return asyncio.run(submit())


@pytest.mark.parametrize("face", ["sync", "async"])
def test_submit_loads_its_script_in_its_own_round_trip(
    own: tuple[Settings, redis.Redis], face: str
) -> None:
    settings, client = own
    store = RunStore(client, settings)
    client.script_flush()
    for session_id in ("s1", "s2"):  # an empty script cache, then one holding the script
        client.config_resetstat()
        run = new_run(session_id)
        assert isinstance(_submit(settings, run, face), Submitted)
        assert calls(client, "script|exists") == 0
        assert calls(client, "script|load") == 1
        assert calls(client, "evalsha") == 1
        assert client.script_exists(Script.SUBMIT.sha) == [True]
        assert store.pending_runs(session_id) == [run.run_id]
        assert [e.type for e in store.replay(session_id)] == [EventType.QUEUED]


def test_withdrawing_warm_advertisements_loads_its_script_in_the_same_round_trip(
    own: tuple[Settings, redis.Redis],
) -> None:
    settings, client = own
    store = RunStore(client, settings)
    store.advertise_warm("wA", {"s1": time.time() + 60, "s2": time.time() + 60})
    assert store.warm_sessions("wA")
    client.script_flush()
    client.config_resetstat()
    store.withdraw_warm("wA", ["s1", "s2"])
    assert calls(client, "script|exists") == 0
    assert calls(client, "evalsha") == 2
    assert store.warm_sessions("wA") == {}
    assert client.get(store.keys.warm_owner("s1")) is None
    assert client.get(store.keys.warm_owner("s2")) is None


def test_a_script_sha_is_the_one_redis_computes() -> None:
    with redis.Redis() as probe:  # only computes the SHA: register_script sends nothing
        for script in Script:
            assert script.sha == probe.register_script(script.value).sha


def test_first_submits_at_once_share_one_info(own: tuple[Settings, redis.Redis]) -> None:
    # RQ needs the server's version before its first enqueue; a hundred submits at once
    # on a new AsyncRunStore each sent INFO before this.
    settings, client = own
    runs = [new_run(f"herd{index}") for index in range(20)]

    async def submit_all() -> list[Any]:
        aclient = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            astore = AsyncRunStore(aclient, settings)
            return await asyncio.gather(*(astore.submit(run) for run in runs))
        finally:
            await aclient.aclose()

    client.config_resetstat()
    results = asyncio.run(submit_all())
    assert all(isinstance(result, Submitted) for result in results)
    assert calls(client, "info") == 1
    assert RunStore(client, settings).pending_runs("herd7") == [runs[7].run_id]
