"""Delayed runs: visible at once as queued with scheduled_for, started by RQ's scheduler
no earlier than their time, cancellable while they wait, keeping their session's order."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer.client import Client
from producer.errors import InvalidJobError
from shared.events import Event, EventType, QueuedData, RunStatus
from shared.jobs import Priority, PromptJob, RunRequest, new_run_id
from shared.rqjobs import queue_key, scheduled_registry_key
from shared.runstore import NewRun, RunStore
from shared.runstore.aio import AsyncRunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.scheduling.support import queued_data, run_events, started_at
from worker.scheduler import listed_registry
from worker.webhooks import delivery_job_id, promote_due


def test_a_delayed_run_starts_no_earlier_than_its_time(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker(settings_override=settings.model_copy(update={"scheduler": True}))
    handle = client.submit(session_id="later", prompt="hello", delay_s=2)
    queued = queued_data(client, handle)
    scheduled_for = queued["scheduled_for"]
    assert isinstance(scheduled_for, float | int)
    assert client.redis.zscore(scheduled_registry_key(settings.queue_name), handle.run_id)
    assert client.session("later").state.value == "queued"  # type: ignore[union-attr]
    # A run of the same session submitted meanwhile keeps behind it.
    after = client.submit(session_id="later", prompt="after")
    assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert after.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert started_at(client, handle) >= scheduled_for
    assert started_at(client, handle) < started_at(client, after)
    submitted = run_events(client, handle)[0].ts
    assert started_at(client, handle) >= submitted + 2


def test_run_at_in_the_past_runs_at_once(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()  # no scheduler needed: a time already past is no delay
    past = datetime.now(UTC) - timedelta(minutes=5)
    handle = client.submit(session_id="now", prompt="hello", run_at=past)
    assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert "scheduled_for" not in queued_data(client, handle)


def test_a_delayed_run_is_cancelled_while_it_waits(client: Client, settings: Settings) -> None:
    handle = client.submit(
        session_id="c", prompt="hello", run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert handle.cancel().outcome.value == "cancelled_queued"
    assert client.redis.zscore(scheduled_registry_key(settings.queue_name), handle.run_id) is None
    types = [e.type for e in run_events(client, handle)]
    assert types == [EventType.QUEUED, EventType.INTERRUPTED, EventType.FINISHED]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"run_at": datetime(2030, 1, 1)}, "timezone"),
        ({"delay_s": -1}, "delay_s"),
        ({"delay_s": 5, "run_at": datetime.now(UTC)}, "not both"),
        ({"run_at": datetime.now(UTC) + timedelta(days=400)}, "within a year"),
        ({"priority": "urgent"}, "priority"),
        ({"limit_key": "a b"}, "limit_key"),
        ({"retry_lost": 11}, "retry_lost"),
        ({"retry_on": ["crashed"]}, "retry_on"),
    ],
)
def test_bad_scheduling_fields_are_refused(
    client: Client, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidJobError, match=problem):
        client.submit(session_id="bad", prompt="x", **fields)
    assert client.session("bad") is None


def _delayed_run(session_id: str, priority: Priority) -> NewRun:
    request = RunRequest(
        run_id=new_run_id(),
        submitted_at=time.time(),
        job=PromptJob(session_id=session_id, prompt="x", priority=priority, delay_s=60),
    )
    queued = Event(type=EventType.QUEUED, data=QueuedData(profile="readonly"))
    return NewRun(request=request, queued=queued, rq_timeout_s=300, result_ttl_s=600)


async def _submit_async(settings: Settings, run: NewRun) -> None:
    async with aioredis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        await AsyncRunStore(client, settings).submit(run)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_due_runs_go_to_their_own_priority_list(
    settings: Settings, redis_client: redis.Redis, face: str
) -> None:
    runs = {p: _delayed_run(f"s-{p}", p) for p in ("high", "default", "low")}
    for run in runs.values():
        if face == "sync":
            RunStore(redis_client, settings).submit(run)
        else:
            asyncio.run(_submit_async(settings, run))
    queue = settings.queue_name
    registry = listed_registry(queue, redis_client, JSONSerializer)
    # RQ's scheduler, a minute later: it enqueues what it is handed into the shared
    # queue's own list, the default one; the others went to their lists already.
    handed = registry.get_jobs_to_schedule(int(time.time()) + 120)
    assert handed == [runs["default"].run_id]
    assert redis_client.zrange(scheduled_registry_key(queue), 0, -1) == [
        runs["default"].run_id.encode()
    ]
    for priority in ("high", "low"):
        run_id = runs[priority].run_id
        assert redis_client.lrange(queue_key(f"{queue}:{priority}"), 0, -1) == [run_id.encode()]
        job = Job.fetch(run_id, connection=redis_client, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.QUEUED
        assert job.origin == queue  # its registries stay the shared queue's


def test_due_webhook_retries_are_left_to_promote_due(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """RQ's scheduler is not handed a due delivery retry: promote_due moves it (in one
    script); both moving it pushed it twice, and the receiver got two POSTs."""
    registry = listed_registry(settings.queue_name, redis_client, JSONSerializer)
    retry = delivery_job_id("a" * 32)
    redis_client.zadd(scheduled_registry_key(settings.queue_name), {retry: 1, "run-x": 1})
    assert registry.get_jobs_to_schedule(int(time.time())) == ["run-x"]
    assert promote_due(redis_client, settings) == 0  # no job hash: nothing to queue
    assert redis_client.zscore(scheduled_registry_key(settings.queue_name), retry) is None
