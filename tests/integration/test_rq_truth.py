"""RQ tells the truth: each run's RQ job ends the way the run ended.

Most tests enqueue first and run a burst worker, whose exit says RQ's bookkeeping
is done: no polling, no sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer import CancelOutcome
from producer.aio import AsyncClient
from producer.client import Client, RunHandle
from shared.events import EventType
from shared.keys import keys_from
from shared.rqjobs import CANCELED_TTL_S, prune_canceled
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.helpers import kill_if_alive, until_grandchild
from worker.proctree import read_stat
from worker.reaper import reap_all

STREAM_TIMEOUT_S = 60.0
WORKER_EXIT_S = 120.0
RQ_BIN = str(Path(sys.executable).parent / "rq")


def _queue(settings: Settings, connection: redis.Redis) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)


def _job(connection: redis.Redis, run_id: str) -> Job:
    return Job.fetch(run_id, connection=connection, serializer=JSONSerializer)


def _where(queue: Queue, run_id: str) -> set[str]:
    """Every place RQ lists the job: its queue and each registry (as `rq info` counts them)."""
    started = {e.split(":", 1)[0] for e in queue.started_job_registry.get_job_ids(cleanup=False)}
    places = {
        "queued": run_id in queue.get_job_ids(),
        "started": run_id in started,
        "finished": run_id in queue.finished_job_registry.get_job_ids(cleanup=False),
        "failed": run_id in queue.failed_job_registry.get_job_ids(cleanup=False),
        "canceled": run_id in queue.canceled_job_registry.get_job_ids(cleanup=False),
    }
    return {name for name, present in places.items() if present}


def _exc_string(job: Job) -> str:
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    return result.exc_string


def _log_records(log_path: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


MODES = pytest.mark.parametrize("mode", ["fork", "simple"])


def _burst(
    start_worker: WorkerFactory, name: str = "burst", mode: str = "fork"
) -> subprocess.Popen[bytes]:
    return start_worker(name, burst=True, mode=mode)


def _await_started(handle: RunHandle) -> None:
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        if envelope.type is EventType.STARTED:
            return
    raise AssertionError("the run ended before it started")


def test_a_succeeded_run_is_a_finished_job(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="ok", prompt="hello")
    assert _burst(start_worker).wait(timeout=WORKER_EXIT_S) == 0
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"
    job = _job(redis_client, handle.run_id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "succeeded"
    assert _where(_queue(settings, redis_client), handle.run_id) == {"finished"}


@MODES
def test_a_failed_run_is_a_failed_job_with_its_reason_and_one_log_line(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    tmp_path: Path,
    mode: str,
) -> None:
    handle = client.submit(session_id="bad", prompt="FAKE: error_result")
    # As if a producer had enqueued it with Retry(max=2): a failed run is still not retried.
    redis_client.hset(f"rq:job:{handle.run_id}", "retries_left", 2)
    assert _burst(start_worker, "failing", mode).wait(timeout=WORKER_EXIT_S) == 0
    finished = handle.wait(timeout_s=STREAM_TIMEOUT_S)
    assert finished.status == "failed"
    job = _job(redis_client, handle.run_id)
    assert job.get_status() == JobStatus.FAILED
    assert _where(_queue(settings, redis_client), handle.run_id) == {"failed"}
    exc_string = _exc_string(job)
    assert exc_string.startswith("worker.job.RunFailed: ")
    assert f"run {handle.run_id} ended failed: {finished.reason}" in exc_string
    assert "Traceback" not in exc_string

    log_text = (tmp_path / "failing.log").read_text(errors="replace")
    assert "Traceback" not in log_text
    failed = [r for r in _log_records(tmp_path / "failing.log") if r["event"] == "rq_job_failed"]
    assert [(r["run_id"], r["status"]) for r in failed] == [(handle.run_id, "failed")]


def test_a_timed_out_run_is_a_failed_job(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="slow", prompt="FAKE: hang", timeout_s=1)
    assert _burst(start_worker).wait(timeout=WORKER_EXIT_S) == 0
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "timed_out"
    job = _job(redis_client, handle.run_id)
    assert job.get_status() == JobStatus.FAILED
    assert "ended timed_out: " in _exc_string(job)
    assert _where(_queue(settings, redis_client), handle.run_id) == {"failed"}


@MODES
def test_a_cancelled_running_run_is_a_canceled_job(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    mode: str,
) -> None:
    handle = client.submit(session_id="stop", prompt="FAKE: hang")
    worker = _burst(start_worker, mode=mode)
    _await_started(handle)
    client.cancel("stop", wait=True)
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "interrupted"
    assert worker.wait(timeout=WORKER_EXIT_S) == 0
    job = _job(redis_client, handle.run_id)
    assert job.get_status() == JobStatus.CANCELED
    assert _where(_queue(settings, redis_client), handle.run_id) == {"canceled"}


def test_a_run_whose_horse_died_is_a_canceled_job(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="horse", prompt="FAKE: grandchild seconds=300")
    worker = _burst(start_worker)
    cli_pid = grandchild = horse = 0
    try:
        cli_pid, grandchild = until_grandchild(handle)
        stat = read_stat(cli_pid)
        assert stat is not None
        horse = stat.ppid
        os.kill(horse, signal.SIGKILL)  # RQ calls that a failure; the run says interrupted
        assert worker.wait(timeout=WORKER_EXIT_S) == 0
    finally:
        kill_if_alive(cli_pid, grandchild, horse)
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "interrupted"
    assert _job(redis_client, handle.run_id).get_status() == JobStatus.CANCELED
    assert _where(_queue(settings, redis_client), handle.run_id) == {"canceled"}


def test_a_lost_run_is_a_failed_job(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    doomed = start_worker("doomed")
    handle = client.submit(session_id="lost", prompt="FAKE: grandchild seconds=300")
    cli_pid = grandchild = horse = 0
    try:
        cli_pid, grandchild = until_grandchild(handle)
        stat = read_stat(cli_pid)
        assert stat is not None
        horse = stat.ppid
        os.kill(doomed.pid, signal.SIGKILL)
        os.kill(horse, signal.SIGKILL)
        doomed.wait()
        keys = keys_from(settings)
        # Its lease would expire within LEASE_TTL_S; expire it now instead of waiting.
        assert redis_client.delete(keys.lease("lost")) == 1
        assert reap_all(client.store) == 1
    finally:
        kill_if_alive(cli_pid, grandchild, horse)
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "lost"
    job = _job(redis_client, handle.run_id)
    assert job.get_status() == JobStatus.FAILED
    assert "declared lost" in _exc_string(job)
    assert _where(_queue(settings, redis_client), handle.run_id) == {"failed"}


def test_rq_info_counts_what_happened(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    ok = client.submit(session_id="info-ok", prompt="hello")
    bad = client.submit(session_id="info-bad", prompt="FAKE: error_result")
    assert _burst(start_worker).wait(timeout=WORKER_EXIT_S) == 0
    assert ok.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"
    assert bad.wait(timeout_s=STREAM_TIMEOUT_S).status == "failed"
    shown = subprocess.run(
        [RQ_BIN, "info", "--raw", "--only-queues", "--url", settings.redis_url.get_secret_value()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
        env=worker_env(settings),
    ).stdout
    assert f"queue {settings.queue_name} 0, 0 executing, 1 finished, 1 failed" in shown


async def _cancel_async(settings: Settings, session_id: str) -> CancelOutcome:
    async with AsyncClient(settings) as client:
        return (await client.cancel(session_id)).outcome


def test_a_run_cancelled_while_queued_leaves_the_queue_as_a_canceled_job(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    doomed = client.submit(session_id="queued", prompt="FAKE: hang")
    later = client.submit(session_id="other", prompt="hello")
    queue = _queue(settings, redis_client)
    assert client.cancel("queued").outcome is CancelOutcome.CANCELLED_QUEUED
    assert _where(queue, doomed.run_id) == {"canceled"}
    assert _job(redis_client, doomed.run_id).get_status() == JobStatus.CANCELED
    assert 0 < redis_client.ttl(f"rq:job:{doomed.run_id}") <= CANCELED_TTL_S
    assert queue.get_job_ids() == [later.run_id]
    assert asyncio.run(_cancel_async(settings, "other")) is CancelOutcome.CANCELLED_QUEUED
    assert queue.get_job_ids() == []
    assert _where(queue, later.run_id) == {"canceled"}


def test_prune_canceled_drops_only_entries_whose_job_expired(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    doomed = client.submit(session_id="queued", prompt="FAKE: hang")
    client.cancel("queued")
    queue = _queue(settings, redis_client)
    # Nothing to prune while the job is kept; its entry goes once the job has expired.
    assert prune_canceled(redis_client, [settings.queue_name]) == 0
    redis_client.zadd(queue.canceled_job_registry.key, {doomed.run_id: 1})
    assert prune_canceled(redis_client, [settings.queue_name]) == 0
    redis_client.delete(f"rq:job:{doomed.run_id}")
    assert prune_canceled(redis_client, [settings.queue_name]) == 1
    assert _where(queue, doomed.run_id) == set()


# -- stock RQ entry points ---------------------------------------------------------


def _stock(
    settings: Settings, tmp_path: Path, argv: list[str], log_name: str
) -> subprocess.CompletedProcess[bytes]:
    scratch = tmp_path / "worker-tmp"
    scratch.mkdir(exist_ok=True)
    with (tmp_path / log_name).open("wb") as log_file:
        return subprocess.run(
            [RQ_BIN, *argv, "--url", settings.redis_url.get_secret_value(), settings.queue_name],
            cwd=REPO,
            env=worker_env(settings, {"TMPDIR": str(scratch)}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=WORKER_EXIT_S,
            check=False,
        )


STOCK_WORKER = [
    "worker",
    "--burst",
    "--worker-class",
    "worker.rqworker.ForkingClaudeWorker",
    "--job-class",
    "worker.jobguard.GuardedJob",
    "--serializer",
    "rq.serializers.JSONSerializer",
]
STOCK_POOL = [
    "worker-pool",
    "--burst",
    "--num-workers",
    "2",
    "--worker-class",
    "worker.rqworker.ForkingClaudeWorker",
]


@pytest.mark.parametrize("argv", [STOCK_WORKER, STOCK_POOL], ids=["rq-worker", "rq-worker-pool"])
def test_stock_rq_workers_run_our_jobs(
    client: Client,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
    argv: list[str],
) -> None:
    ok = client.submit(session_id="stock-ok", prompt="hello")
    bad = client.submit(session_id="stock-bad", prompt="FAKE: error_result")
    hostile = _queue(settings, redis_client).enqueue_call("shared.jobs.new_run_id")
    done = _stock(settings, tmp_path, argv, "stock.log")
    log_text = (tmp_path / "stock.log").read_text(errors="replace")
    assert done.returncode == 0, log_text
    assert ok.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"
    assert bad.wait(timeout_s=STREAM_TIMEOUT_S).status == "failed"
    assert _job(redis_client, ok.run_id).get_status() == JobStatus.FINISHED
    assert _job(redis_client, bad.run_id).get_status() == JobStatus.FAILED
    # The guard lives in the worker class: the pool passes neither job class nor serializer.
    assert _job(redis_client, hostile.id).get_status() == JobStatus.FAILED
    assert "is not allowed" in _exc_string(_job(redis_client, hostile.id))
    starting = [r for r in _log_records(tmp_path / "stock.log") if r["event"] == "worker_starting"]
    assert starting and all(r["environment_hidden"] is True for r in starting), log_text
