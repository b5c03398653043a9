"""Redis Sentinel: a real master, replica and three sentinels; the master is SIGKILLed
while a run streams, and nothing the worker had written with WAIT is lost.

The replica is also SIGSTOPped for a stretch of the run before the kill, so every
event write meanwhile goes unconfirmed (WAIT times out): the worker keeps those events
buffered, writes them again (the store drops what the master already holds, by
run-local index), and still holds them when the master dies. A SIGKILLed process
does not lose what the kernel already sent, so the paused replica still receives them
on SIGCONT: a real loss with MIN_REPLICAS=0 needs a host or network failure, which
this test does not stage; what it does prove is the failover itself and the
unconfirmed-write path of MIN_REPLICAS=1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from producer.aio import AsyncClient
from producer.client import Client
from producer.doctor import Status, check_redis
from shared.connection import ReplicasBehind, sync_redis
from shared.events import Envelope, EventType
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import envelope_texts
from tests.redis_server import free_port
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster

LINES = 500


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    nodes = SentinelCluster(tmp_path / "sentinel")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _through_sentinels(settings: Settings, cluster: SentinelCluster, **extra: object) -> Settings:
    return Settings.model_validate(
        {
            **settings.model_dump(),
            "redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0"),  # never answers
            "redis_sentinels": tuple(cluster.sentinel_addresses),
            "redis_sentinel_master": MASTER_NAME,
            **extra,
        }
    )


@pytest.mark.slow
def test_master_killed_mid_run_loses_and_repeats_nothing(
    settings: Settings, cluster: SentinelCluster, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    own = _through_sentinels(settings, cluster, redis_min_replicas=1, redis_replica_wait_ms=500)
    worker_log = tmp_path / "sentinel-w.log"  # the start_worker fixture writes it there
    start_worker("sentinel-w", settings_override=own)
    first_fifth = threading.Event()
    second_fifth = threading.Event()
    injected = threading.Event()
    failures: list[BaseException] = []

    def inject() -> None:
        try:
            first_fifth.wait()
            cluster.pause_replica()
            second_fifth.wait()
            cluster.failover_by_kill()
            cluster.restart_old_master()
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)
        finally:
            injected.set()

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    seen: list[Envelope] = []
    with Client(own) as client:
        handle = client.submit(session_id="failover", prompt=f"FAKE: slow n={LINES} delay_ms=40")
        lines = 0
        for envelope in handle.stream(timeout_s=180):
            seen.append(envelope)
            lines += len(envelope_texts(envelope))
            if lines >= LINES // 5:
                first_fifth.set()
            if lines >= 2 * LINES // 5:
                second_fifth.set()
        injector.join(timeout=120)
        assert injected.is_set() and not failures, failures
        # The sentinels did move the master, and the old one came back as its replica.
        assert cluster.master_port() == cluster.master.port

        seqs = [e.seq for e in seen]
        assert seqs == list(range(1, len(seqs) + 1)), "seq not contiguous from 1"
        finished = [e for e in seen if e.type is EventType.FINISHED]
        assert len(finished) == 1 and seen[-1] is finished[0]
        assert finished[0].data["status"] == "succeeded"
        texts = [t for e in seen for t in envelope_texts(e)]
        assert texts == [f"slow {i}/{LINES}" for i in range(1, LINES + 1)]
        # What the new master holds is exactly what the stream delivered.
        assert client.history("failover") == seen
    # The paused replica made the worker's writes go unconfirmed: it buffered and retried.
    assert "replicas confirmed the write" in worker_log.read_text()


def test_write_unconfirmed_by_replicas_is_an_outage(
    settings: Settings, cluster: SentinelCluster
) -> None:
    """With more replicas required than exist, an event write raises ReplicasBehind (a
    ConnectionError, which the publisher buffers and retries); with enough, it passes."""
    one = _through_sentinels(settings, cluster, redis_min_replicas=1, redis_replica_wait_ms=200)
    two = _through_sentinels(settings, cluster, redis_min_replicas=2, redis_replica_wait_ms=200)
    with sync_redis(one) as connection:
        store = RunStore(connection, one)
        demanding = RunStore(connection, two)
        call = store.calls.renew("s", "r", "token")  # any script: WAIT follows it alike
        assert store.scripts.run_replicated(call) == 0
        with pytest.raises(ReplicasBehind, match="1 of 2 replicas") as raised:
            demanding.scripts.run_replicated(call)
        assert isinstance(raised.value, redis.ConnectionError)


def test_clients_find_the_master_through_the_sentinels(
    settings: Settings, cluster: SentinelCluster
) -> None:
    own = _through_sentinels(settings, cluster, redis_min_replicas=1)
    with sync_redis(own) as connection:
        connection.set(f"{own.key_prefix}:probe", "1")
        assert int(connection.info("server")["tcp_port"]) == cluster.master.port
    assert own.scope != settings.scope
    # doctor reads the master through the sentinels too, and counts its replica.
    checks = {c.name: c for c in check_redis(own, time.time())}
    assert checks["redis"].status is Status.OK
    assert checks["replicas"].status is Status.OK, checks["replicas"]


@pytest.mark.slow
def test_asyncio_stream_follows_a_failover(
    settings: Settings, cluster: SentinelCluster, start_worker: WorkerFactory
) -> None:
    """The gateway's client (AsyncClient, redis.asyncio) rides out the same failover."""
    own = _through_sentinels(settings, cluster)
    start_worker("sentinel-aio", settings_override=own)
    lines = 100

    async def follow() -> list[Envelope]:
        seen: list[Envelope] = []
        killed = False
        async with AsyncClient(own) as client:
            handle = await client.submit(
                session_id="aio-failover", prompt=f"FAKE: slow n={lines} delay_ms=40"
            )
            async for envelope in handle.stream(timeout_s=120):
                seen.append(envelope)
                texts = sum(len(envelope_texts(e)) for e in seen)
                if not killed and texts >= lines // 4:
                    killed = True  # blocks this loop: the stream's socket dies meanwhile
                    await asyncio.to_thread(cluster.failover_by_kill)
            assert killed
            assert await client.history("aio-failover") == seen
        return seen

    seen = asyncio.run(follow())
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert [e.type for e in seen].count(EventType.FINISHED) == 1
    assert seen[-1].data["status"] == "succeeded"
    assert [t for e in seen for t in envelope_texts(e)] == [
        f"slow {i}/{lines}" for i in range(1, lines + 1)
    ]


def test_an_asyncio_burst_through_the_sentinels_waits_for_connections(
    settings: Settings, cluster: SentinelCluster
) -> None:
    """The Sentinel-managed asyncio pool also makes a command wait for a free connection
    rather than fail (shared/connection.py: _BlockingSentinelPool)."""
    own = _through_sentinels(settings, cluster, redis_max_connections=3)

    async def burst() -> list[object]:
        async with AsyncClient(own) as client:
            return await asyncio.gather(
                *(client.submit(session_id=f"burst-{i}", prompt="hi") for i in range(120)),
                return_exceptions=True,
            )

    results = asyncio.run(burst())
    assert not [r for r in results if isinstance(r, BaseException)], results[:3]
    with Client(own) as client:
        assert all(client.session(f"burst-{i}") is not None for i in range(120))
