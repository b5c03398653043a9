"""A run that ended while Redis kept RQ from its bookkeeping: the reaper settles RQ."""

from __future__ import annotations

import pytest
import redis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from producer.client import Client
from shared.settings import Settings
from tests.conftest import WorkerFactory
from worker.reaper import reap_all


def _strand_as_started(client: Client, settings: Settings, run_id: str) -> StartedJobRegistry:
    """Put a finished job back in the state a lost bookkeeping step leaves it in."""
    job = Job.fetch(run_id, connection=client.redis, serializer=JSONSerializer)
    registry = StartedJobRegistry(settings.queue_name, connection=client.redis)
    with client.redis.pipeline() as pipe:
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        pipe.zadd(registry.key, {f"{run_id}:gone-execution": 1})
        pipe.execute()
    # The reaper looks twice, a lease apart; this marks the first sighting as old.
    client.redis.set(client.keys.first_seen_stranded(run_id), 1, ex=1)
    return registry


@pytest.mark.parametrize(
    ("prompt", "rq_status"),
    [("hello", JobStatus.FINISHED), ("FAKE: error_result", JobStatus.FAILED)],
)
def test_stale_started_job_of_an_ended_run_is_settled(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    prompt: str,
    rq_status: JobStatus,
) -> None:
    handle = client.submit(session_id="settle", prompt=prompt)
    start_worker(burst=True).wait(timeout=120)
    assert handle.wait(timeout_s=60).status in ("succeeded", "failed")
    registry = _strand_as_started(client, settings, handle.run_id)
    assert handle.run_id in registry.get_job_ids(cleanup=False)

    assert reap_all(client.store) == 0  # nothing is lost

    assert handle.run_id not in registry.get_job_ids(cleanup=False)
    job = Job.fetch(handle.run_id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() == rq_status
    assert client.history("settle")[-1].data["status"] == (
        "succeeded" if rq_status == JobStatus.FINISHED else "failed"
    )


def test_a_job_a_live_worker_is_still_on_is_left_alone(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="busy", prompt="hello")
    start_worker(burst=True).wait(timeout=120)
    assert handle.wait(timeout_s=60).status == "succeeded"
    registry = _strand_as_started(client, settings, handle.run_id)
    job = Job.fetch(handle.run_id, connection=redis_client, serializer=JSONSerializer)
    assert job.worker_name
    with redis_client.pipeline() as pipe:  # the worker is still in RQ's bookkeeping
        Execution.create(job, ttl=60, pipeline=pipe, worker_name=job.worker_name)
        pipe.execute()

    reap_all(client.store)

    assert handle.run_id in registry.get_job_ids(cleanup=False)
    assert job.get_status() == JobStatus.STARTED
