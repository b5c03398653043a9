"""Concurrency limits across workers: never more at once than the limit, runs held back
say so (`waiting{reason: concurrency_limit}`), and a killed worker's slot is freed."""

from __future__ import annotations

import itertools
import signal
import subprocess

import pytest

from producer.client import Client, RunHandle
from shared.events import RunStatus
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.scheduling.support import finished_at, run_events, started_at


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "concurrency_limits": {"tenant": 1},
            "lease_ttl_s": 2.0,
            "lease_renew_s": 0.5,
            "reaper_interval_s": 0.5,
        }
    )


def _start(
    start_worker: WorkerFactory, limited: Settings, count: int
) -> dict[str, subprocess.Popen[bytes]]:
    return {f"w{i}": start_worker(f"w{i}", settings_override=limited) for i in range(count)}


def test_a_limit_of_one_across_three_workers_never_overlaps(
    client: Client, limited: Settings, start_worker: WorkerFactory
) -> None:
    _start(start_worker, limited, 3)
    handles = [
        client.submit(session_id=f"s{i}", prompt="FAKE: slow n=5 delay_ms=40", limit_key="tenant")
        for i in range(4)
    ]
    free = client.submit(session_id="free", prompt="hello")  # no key: not held back
    for handle in [*handles, free]:
        assert handle.wait(timeout_s=90).status is RunStatus.SUCCEEDED
    spans = sorted((started_at(client, h), finished_at(client, h)) for h in handles)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    waited = [e for h in handles for e in run_events(client, h) if e.type == "waiting"]
    assert waited, "three workers and one slot: some run must have waited"
    assert all(e.data == {"reason": "concurrency_limit", "key": "tenant"} for e in waited)
    assert all(sum(e.type == "waiting" for e in run_events(client, h)) <= 1 for h in handles)
    assert client.redis.zcard(f"{limited.key_prefix}:limit:tenant") == 0


def _worker_of(client: Client, handle: RunHandle) -> str:
    for envelope in handle.stream(timeout_s=60):
        if envelope.type == "started":
            return str(envelope.data["worker"])
    raise AssertionError("the run never started")


def test_no_slot_is_leaked_after_a_worker_sigkill(
    client: Client, limited: Settings, start_worker: WorkerFactory
) -> None:
    workers = _start(start_worker, limited, 2)
    doomed = client.submit(session_id="a", prompt="FAKE: hang", limit_key="tenant")
    victim = workers[_worker_of(client, doomed)]
    held = client.submit(session_id="b", prompt="hello", limit_key="tenant")
    # Held back until the slot frees: its waiting event comes before any start.
    for envelope in held.stream(timeout_s=60):
        if envelope.type == "waiting":
            break
        assert envelope.type != "started"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert doomed.wait(timeout_s=60).status is RunStatus.LOST
    assert held.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert started_at(client, held) >= finished_at(client, doomed)
