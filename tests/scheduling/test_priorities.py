"""Priorities: high runs go first, low runs last, never ahead of their session's order."""

from __future__ import annotations

import redis

from producer.client import Client
from shared.events import RunStatus
from shared.rqjobs import queue_key
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.scheduling.support import queued_data, started_at


def test_high_first_low_last_but_session_order_wins(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    # Everything waits before a worker starts, so only priorities decide the order.
    a1 = client.submit(session_id="sa", prompt="a1")
    low = client.submit(session_id="sb", prompt="b", priority="low")
    high = client.submit(session_id="sc", prompt="c", priority="high")
    a2 = client.submit(session_id="sa", prompt="a2", priority="high")
    assert client.redis.llen(queue_key(f"{settings.queue_name}:high")) == 1
    assert client.redis.llen(queue_key(f"{settings.queue_name}:low")) == 1
    start_worker()  # one worker: it takes one run at a time, in the order it dequeues them
    for handle in (a1, low, high, a2):
        assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    order = sorted((a1, low, high, a2), key=lambda h: started_at(client, h))
    assert [h.run_id for h in order] == [high.run_id, a1.run_id, a2.run_id, low.run_id]
    # a2 asked for high but waits where its session's earlier run waits.
    assert queued_data(client, a2)["priority"] == "default"
    assert queued_data(client, high)["priority"] == "high"
    assert "priority" not in queued_data(client, a1)  # a plain run's queued is unchanged


def test_high_run_waits_for_a_low_run_of_its_session(
    client: Client, start_worker: WorkerFactory
) -> None:
    first = client.submit(session_id="s", prompt="first", priority="low")
    other = client.submit(session_id="t", prompt="other")
    second = client.submit(session_id="s", prompt="second", priority="high")
    start_worker()
    for handle in (first, other, second):
        assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert started_at(client, other) < started_at(client, first) < started_at(client, second)
    assert queued_data(client, second)["priority"] == "low"


def test_cancel_takes_a_run_out_of_its_priority_list(client: Client, settings: Settings) -> None:
    handle = client.submit(session_id="s", prompt="x", priority="high")
    key = queue_key(f"{settings.queue_name}:high")
    assert client.redis.lrange(key, 0, -1) == [handle.run_id.encode()]
    client.cancel("s", run_id=handle.run_id)
    assert client.redis.llen(key) == 0
    assert client.redis.hget(f"rq:job:{handle.run_id}", "status") == b"canceled"


def test_a_delayed_high_run_due_while_others_wait_goes_first(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    # One worker, running RQ's scheduler, kept busy while the delayed run comes due.
    start_worker(settings_override=settings.model_copy(update={"scheduler": True}))
    blocker = client.submit(session_id="busy", prompt="FAKE: hang")
    assert next(e for e in blocker.stream(timeout_s=60) if e.type == "started")
    default = client.submit(session_id="d", prompt="d")
    low = client.submit(session_id="l", prompt="l", priority="low")
    high = client.submit(session_id="h", prompt="h1", priority="high", delay_s=1)
    # Wait (blocking, no polling) for RQ's scheduler to enqueue it: into the high list,
    # ahead of the others. A connection of its own: BLMOVE outwaits any read timeout.
    high_list, url = queue_key(f"{settings.queue_name}:high"), settings.redis_url
    with redis.Redis.from_url(url.get_secret_value(), socket_timeout=None) as watcher:
        landed = watcher.blmove(high_list, high_list, 30, "RIGHT", "LEFT")
    assert landed == high.run_id.encode(), "the due high run never reached the high list"
    # A later run of its session asks high too: it waits behind the earlier one.
    later = client.submit(session_id="h", prompt="h2", priority="high")
    assert queued_data(client, later)["priority"] == "high"
    blocker.cancel()
    for handle in (high, later, default, low):
        assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    order = sorted((high, later, default, low), key=lambda h: started_at(client, h))
    assert [h.run_id for h in order] == [high.run_id, later.run_id, default.run_id, low.run_id]
