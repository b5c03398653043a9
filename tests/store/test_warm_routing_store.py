"""Warm routing in the store, on a real Redis: submit puts a session's run on the own
queue of the worker advertising its CLI warm, else on the shared queue; moving jobs
between queues; the reaper's release of a gone worker's queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.rqjobs import (
    forget_worker_queue,
    head_waiting,
    is_worker_name,
    move_queued,
    queue_key,
    queue_worker,
    worker_queue_name,
    worker_queues,
)
from shared.runstore import AsyncRunStore, Busy, RunStore, Submitted
from shared.runstore.calls import ScriptCall
from shared.runstore.scripting import ScriptRunner
from shared.settings import Settings
from tests.store.conftest import new_run
from worker.reaper import release_worker_queues

Submit = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def submit(request: pytest.FixtureRequest, store: RunStore, settings: Settings) -> Iterator[Submit]:
    """`submit(run, **kwargs)` on the sync store, or on the asyncio store."""
    if request.param == "sync":
        yield store.submit
        return
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    astore = AsyncRunStore(client, settings)
    try:
        yield lambda run, **kwargs: loop.run_until_complete(astore.submit(run, **kwargs))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def _waiting(redis_client: redis.Redis, queue_name: str) -> list[str]:
    entries = cast(list[bytes], redis_client.lrange(queue_key(queue_name), 0, -1))
    return [i.decode() for i in entries]


def _queues(redis_client: redis.Redis) -> set[str]:
    return {m.decode() for m in cast(set[bytes], redis_client.smembers(Queue.redis_queues_keys))}


def test_own_queue_names_are_tied_to_the_queue_and_refuse_bad_worker_names() -> None:
    assert worker_queue_name("q", "host.12-0") == "q:worker:host.12-0"
    assert queue_worker("q", "q:worker:host.12-0") == "host.12-0"
    assert queue_worker("q", "q") is None
    assert queue_worker("other", "q:worker:host.12-0") is None
    assert queue_worker("q", "q:worker:a:b") is None  # not a name we would make
    for bad in ("", "a:b", "a,b", "a b", "a*", "x" * 129, "é"):
        assert not is_worker_name(bad)
        with pytest.raises(ValueError):
            worker_queue_name("q", bad)


def test_a_run_of_a_warm_session_goes_to_its_owners_own_queue(
    submit: Submit, store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("wA", {"s1": time.time() + 60})
    run = new_run("s1")
    assert isinstance(submit(run), Submitted)
    own = worker_queue_name(settings.queue_name, "wA")
    assert _waiting(redis_client, own) == [run.run_id]
    assert _waiting(redis_client, settings.queue_name) == []
    # The job belongs to the shared queue: RQ records it there wherever it waits.
    job = Job.fetch(run.run_id, connection=redis_client, serializer=JSONSerializer)
    assert job.origin == settings.queue_name
    assert job.get_status() == "queued"
    # Its list is one RQ knows (rq info, the reaper).
    assert queue_key(own) in _queues(redis_client)
    assert store.pending_runs("s1") == [run.run_id]


def test_a_run_of_a_session_nobody_holds_warm_goes_to_the_shared_queue(
    submit: Submit, store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("wA", {"other": time.time() + 60})
    run = new_run("s1")
    assert isinstance(submit(run), Submitted)
    assert _waiting(redis_client, settings.queue_name) == [run.run_id]
    assert _waiting(redis_client, worker_queue_name(settings.queue_name, "wA")) == []


@pytest.mark.parametrize("junk", ["", "a:b", "bad name", "w*", "x" * 200, "\xff"])
def test_junk_in_the_owner_key_sends_the_run_to_the_shared_queue(
    submit: Submit, store: RunStore, redis_client: redis.Redis, settings: Settings, junk: str
) -> None:
    redis_client.set(store.keys.warm_owner("s1"), junk.encode("latin-1"), ex=60)
    run = new_run("s1")
    assert isinstance(submit(run), Submitted)
    assert _waiting(redis_client, settings.queue_name) == [run.run_id]
    assert _queues(redis_client) == {queue_key(settings.queue_name)}


def test_reject_if_busy_still_holds_with_routing(
    submit: Submit, store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("wA", {"s1": time.time() + 60})
    first = new_run("s1")
    assert isinstance(submit(first, reject_if_busy=True), Submitted)
    assert submit(new_run("s1"), reject_if_busy=True) == Busy()
    assert _waiting(redis_client, worker_queue_name(settings.queue_name, "wA")) == [first.run_id]


class _WithdrawnMeanwhile(ScriptRunner):
    """Withdraws the advertisement once, between submit's read of it and its EXEC (the
    worker became busy just then)."""

    def __init__(self, client: redis.Redis, settings: Settings, other: RunStore) -> None:
        super().__init__(client, settings)
        self.other = other
        self.withdrawn = False

    def queue(self, call: ScriptCall, pipe: redis.client.Pipeline) -> None:
        if not self.withdrawn:
            self.withdrawn = True
            self.other.withdraw_warm("wA", ["s1"])
        super().queue(call, pipe)


def test_an_advertisement_withdrawn_before_the_commit_sends_the_run_to_the_shared_queue(
    store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("wA", {"s1": time.time() + 60})
    racing = RunStore(redis_client, settings)
    racing.scripts = meanwhile = _WithdrawnMeanwhile(redis_client, settings, store)
    run = new_run("s1")
    assert isinstance(racing.submit(run), Submitted)
    assert meanwhile.withdrawn
    assert _waiting(redis_client, settings.queue_name) == [run.run_id]
    assert _waiting(redis_client, worker_queue_name(settings.queue_name, "wA")) == []
    assert store.pending_runs("s1") == [run.run_id]  # queued once, not twice


def test_move_queued_keeps_the_order_and_appends_behind_the_shared_queue(
    store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    before = new_run("s0")
    store.submit(before)
    store.advertise_warm("wA", {"s1": time.time() + 60, "s2": time.time() + 60})
    routed = [new_run("s1"), new_run("s2"), new_run("s1")]
    for run in routed:
        store.submit(run)
    own = worker_queue_name(settings.queue_name, "wA")
    moved = move_queued(redis_client, own, settings.queue_name)
    assert moved == [r.run_id for r in routed]
    assert _waiting(redis_client, settings.queue_name) == [before.run_id, *moved]
    assert _waiting(redis_client, own) == []
    assert move_queued(redis_client, own, settings.queue_name) == []


def test_worker_queues_lists_only_valid_own_queues_of_this_queue(
    redis_client: redis.Redis, settings: Settings
) -> None:
    q = settings.queue_name
    members = [f"{q}:worker:wA", f"{q}:worker:a:b", f"{q}x:worker:wB", q, "other:worker:wC"]
    redis_client.sadd(Queue.redis_queues_keys, *(queue_key(m) for m in members))
    assert worker_queues(redis_client, q) == {"wA": f"{q}:worker:wA"}


def test_an_empty_own_queue_is_forgotten_and_a_busy_one_is_not(
    store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("wA", {"s1": time.time() + 60})
    store.submit(new_run("s1"))
    own = worker_queue_name(settings.queue_name, "wA")
    assert not forget_worker_queue(redis_client, own)
    assert queue_key(own) in _queues(redis_client)
    move_queued(redis_client, own, settings.queue_name)
    assert forget_worker_queue(redis_client, own)
    assert queue_key(own) not in _queues(redis_client)


def test_head_waiting_needs_the_same_head_on_two_looks(
    store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    own = worker_queue_name(settings.queue_name, "wA")
    assert not head_waiting(redis_client, own, min_age_s=0)  # empty
    store.advertise_warm("wA", {"s1": time.time() + 60, "s2": time.time() + 60})
    first, second = new_run("s1"), new_run("s2")
    store.submit(first)
    store.submit(second)
    assert not head_waiting(redis_client, own, min_age_s=0)  # first sighting
    assert head_waiting(redis_client, own, min_age_s=0)
    assert not head_waiting(redis_client, own, min_age_s=3600)  # not for that long
    redis_client.lpop(queue_key(own))  # its worker took it: a new head
    assert not head_waiting(redis_client, own, min_age_s=0)


def test_the_reaper_releases_the_queue_and_warm_sessions_of_a_worker_that_never_lived(
    store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    store.advertise_warm("ghost", {"s1": time.time() + 60, "s2": time.time() + 60})
    runs = [new_run("s1"), new_run("s2")]
    for run in runs:
        store.submit(run)
    own = worker_queue_name(settings.queue_name, "ghost")
    assert release_worker_queues(store) == 2
    assert _waiting(redis_client, settings.queue_name) == [r.run_id for r in runs]
    assert store.warm_owner("s1") is None and store.warm_owner("s2") is None
    assert store.warm_sessions("ghost") == {}
    assert queue_key(own) not in _queues(redis_client)
    assert release_worker_queues(store) == 0
    # Whoever takes them records them on the shared queue, as any job.
    job = Job.fetch(runs[0].run_id, connection=redis_client, serializer=JSONSerializer)
    assert job.origin == settings.queue_name
