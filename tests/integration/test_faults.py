"""Faults: dead workers, leftovers, warm shutdown, Redis going away mid-run."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from producer.client import Client
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import envelope_texts, kill_if_alive, until_grandchild
from tests.redis_server import RedisServer
from tests.zygote import shared_zygote
from worker.proctree import is_alive, read_stat

FAST_FAULTS = {
    "lease_ttl_s": 2.0,
    "lease_renew_s": 0.5,
    "reaper_interval_s": 0.5,
}


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker (warm, then cold) while its own Redis still answers.

    Stopped after its Redis, a worker spends the fixture's whole 15 s stop limit
    reconnecting before it is killed.
    """
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _await_dead(pid: int, limit_s: float = 30.0) -> bool:
    """Wait for a process we expect another party to kill: its pidfd becomes readable."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        select.select([pidfd], [], [], limit_s)
    finally:
        os.close(pidfd)
    return not is_alive(pid)


@pytest.mark.slow
def test_a_dead_workers_run_is_declared_lost_and_leaves_nothing_behind(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    fast = settings.model_copy(update=FAST_FAULTS)
    doomed = start_worker("doomed", settings_override=fast)
    handle = client.submit(session_id="dead", prompt="FAKE: grandchild seconds=300")
    cli_pid = grandchild = horse = 0
    try:
        cli_pid, grandchild = until_grandchild(handle)
        stat = read_stat(cli_pid)
        assert stat is not None
        horse = stat.ppid
        os.kill(doomed.pid, signal.SIGKILL)  # the host's worker dies hard, horse and all
        os.kill(horse, signal.SIGKILL)
        doomed.wait()
        start_worker("survivor", settings_override=fast)
        died_at = time.monotonic()
        events = list(handle.stream(timeout_s=60))
        detected_s = time.monotonic() - died_at
        finished = [e for e in events if e.type is EventType.FINISHED]
        assert [f.data["status"] for f in finished] == ["lost"]
        assert any(e.type is EventType.ERROR and e.data["code"] == "lost" for e in events)
        assert _await_dead(cli_pid)  # parent-death signal
        assert _await_dead(grandchild)  # the survivor on this host killed the leftover
        print(f"lost-run detection took {detected_s:.2f}s")
        job = Job.fetch(handle.run_id, connection=client.redis, serializer=JSONSerializer)
        assert job.get_status() == "failed"
        started = StartedJobRegistry(settings.queue_name, connection=client.redis)
        assert handle.run_id not in started.get_job_ids()
        assert client.session("dead") is not None
        assert client.session("dead").state == "idle"  # type: ignore[union-attr]
        # the session is usable again
        assert (
            client.submit(session_id="dead", prompt="again").wait(timeout_s=60).status
            == "succeeded"
        )
    finally:
        kill_if_alive(cli_pid, grandchild, horse)


def test_warm_shutdown_interrupts_a_run_after_the_grace_period(
    client: Client, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    handle = client.submit(session_id="warm", prompt="FAKE: grandchild seconds=300")
    cli_pid = grandchild = 0
    try:
        cli_pid, grandchild = until_grandchild(handle)
        worker.send_signal(signal.SIGTERM)
        finished = handle.wait(timeout_s=60)
        assert finished.status == "interrupted"
        assert "shutting down" in str(finished.reason)
        assert not is_alive(cli_pid)
        assert not is_alive(grandchild)
        assert worker.wait(timeout=60) == 0
    finally:
        kill_if_alive(cli_pid, grandchild)


def test_warm_shutdown_lets_a_short_run_finish(client: Client, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    handle = client.submit(session_id="short", prompt="FAKE: slow n=5 delay_ms=100")
    for envelope in handle.stream(timeout_s=60):
        if envelope.type is EventType.STARTED:
            worker.send_signal(signal.SIGTERM)
            break
    assert handle.wait(timeout_s=60).status == "succeeded"
    assert worker.wait(timeout=60) == 0


@pytest.mark.slow
def test_redis_restart_mid_run_loses_and_duplicates_nothing(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        own = settings.model_copy(update={"redis_url": SecretStr(server.url)})
        worker = start_worker("outage", settings_override=own)
        with Client(own) as client:
            handle = client.submit(session_id="outage", prompt="FAKE: slow n=40 delay_ms=50")
            seen: list[Envelope] = []
            restarted = False
            for envelope in handle.stream(timeout_s=120):
                seen.append(envelope)
                if not restarted and sum(len(envelope_texts(e)) for e in seen) >= 5:
                    server.restart()  # the stream must reconnect and resume by itself
                    restarted = True
            assert restarted
            seqs = [e.seq for e in seen]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert [e.type for e in seen].count(EventType.FINISHED) == 1
            assert seen[-1].data["status"] == "succeeded"
            texts = [t for e in seen for t in envelope_texts(e)]
            assert len(texts) == 40
            assert client.history("outage") == seen
        _stop_worker(worker)
    finally:
        server.stop()


def test_reap_command_runs(settings: Settings) -> None:
    from tests.conftest import worker_env

    done = shared_zygote().run(["producer", "reap"], env=worker_env(settings))
    assert done.returncode == 0, done.stderr
    assert "0 run(s) declared lost" in done.stdout


@pytest.mark.slow
def test_a_long_outage_overflows_the_buffer_and_ends_the_run_cleanly(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    cli_pid = 0
    try:
        own = settings.model_copy(
            update={"redis_url": SecretStr(server.url), "publish_buffer_bytes": 4096}
        )
        worker = start_worker("overflow", settings_override=own)
        with Client(own) as client:
            handle = client.submit(
                session_id="overflow", prompt="FAKE: many n=2000 rate=200 size=200"
            )
            for envelope in handle.stream(timeout_s=60):
                if envelope.type is EventType.STARTED:
                    cli_pid = int(envelope.data["pid"])
                if envelope_texts(envelope):
                    break
            server.stop()  # the worker keeps reading the CLI, and its buffer fills
            assert _await_dead(cli_pid)  # over 4 KiB buffered: the run is ended
            server.start()
            events = client.history("overflow")
            if events[-1].type is not EventType.FINISHED:
                events += list(
                    client.stream(
                        "overflow", after=events[-1].seq, timeout_s=60, stop_at_finish=True
                    )
                )
            finished = [e for e in events if e.type is EventType.FINISHED]
            assert [f.data["status"] for f in finished] == ["failed"]
            assert any(
                e.type is EventType.ERROR and e.data["code"] == "buffer_overflow" for e in events
            )
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(seqs) + 1))
        _stop_worker(worker)
    finally:
        kill_if_alive(cli_pid)
        server.stop()
