"""RQ's worker heartbeat in one round trip, not repeated within a second
(worker/heartbeat.py), on a redis-server of the test's own (exact command counts)."""

from __future__ import annotations

import redis

from shared.settings import Settings
from tests.store.conftest import calls
from worker.entry import build_worker


def test_a_heartbeat_is_one_transaction_and_a_repeat_is_left_out(
    own: tuple[Settings, redis.Redis],
) -> None:
    settings, client = own
    worker = build_worker(settings, mode="simple")
    client.config_resetstat()
    worker.heartbeat()
    worker.heartbeat()  # the same TTL, at once: nothing to send
    assert (calls(client, "multi"), calls(client, "exec"), calls(client, "hset")) == (1, 1, 1)
    assert calls(client, "expire") == 2  # the worker's key and its executions' key
    assert client.hget(worker.key, "last_heartbeat") is not None
    assert client.ttl(worker.key) > worker.worker_ttl  # RQ's worker_ttl + 60
    worker.heartbeat(30)  # another TTL goes out
    assert calls(client, "hset") == 2
    assert 0 < client.ttl(worker.key) <= 30


def test_a_heartbeat_after_a_pipelined_one_goes_out(own: tuple[Settings, redis.Redis]) -> None:
    # A job's pipelined heartbeat sets a short TTL; the heartbeat after the job must set
    # the idle TTL again, or the idle worker's key would expire while it waits.
    settings, client = own
    worker = build_worker(settings, mode="simple")
    worker.heartbeat()
    with client.pipeline() as pipe:
        worker.heartbeat(90, pipeline=pipe)
        pipe.execute()
    assert 0 < client.ttl(worker.key) <= 90
    worker.heartbeat()
    assert client.ttl(worker.key) > worker.worker_ttl
