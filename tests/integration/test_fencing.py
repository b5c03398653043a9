"""Lease expiry and fencing, driven in-process against a real Redis."""

from __future__ import annotations

import threading

import pytest
import redis

from producer.client import Client
from shared.events import Event, EventType, TextData
from shared.keys import keys_from
from shared.settings import Settings
from worker.claim import claim_run
from worker.context import WorkerContext
from worker.lease import LeaseKeeper
from worker.publisher import OwnershipLost
from worker.reaper import reap_all


def _ctx(settings: Settings, redis_client: redis.Redis, name: str) -> WorkerContext:
    return WorkerContext(
        settings=settings, redis=redis_client, keys=keys_from(settings), worker_name=name, host="h"
    )


def _text(value: str) -> Event:
    return Event(type=EventType.TEXT, data=TextData(text=value))


def test_a_stale_owner_is_fenced_off_after_its_lease_expires(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    first = client.submit(session_id="fence", prompt="one")
    second = client.submit(session_id="fence", prompt="two")
    ctx = _ctx(settings, redis_client, "stale")
    claimed = claim_run(ctx, "fence", first.run_id)
    assert claimed is not None
    stale, _token = claimed
    stale.publish(_text("while I still hold the lease"))

    redis_client.delete(client.keys.lease("fence"))  # the lease runs out (owner paused)
    assert reap_all(client.store) == 1
    fresh = claim_run(_ctx(settings, redis_client, "fresh"), "fence", second.run_id)
    assert fresh is not None
    fresh[0].publish(_text("the new owner speaks"))

    with pytest.raises(OwnershipLost):
        stale.publish(_text("late event from the stale worker"))

    events = client.history("fence")
    texts = [e.data["text"] for e in events if e.type is EventType.TEXT]
    assert texts == ["while I still hold the lease", "the new owner speaks"]
    first_finished = [e for e in events if e.type is EventType.FINISHED]
    assert [(e.run_id, e.data["status"]) for e in first_finished] == [(first.run_id, "lost")]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_a_live_lease_is_never_reaped(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="alive", prompt="x")
    assert claim_run(_ctx(settings, redis_client, "w"), "alive", handle.run_id) is not None
    assert reap_all(client.store) == 0
    assert not any(e.type is EventType.FINISHED for e in client.history("alive"))


def test_lease_keeper_reports_a_lost_lease(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="keep", prompt="x")
    claimed = claim_run(_ctx(settings, redis_client, "w"), "keep", handle.run_id)
    assert claimed is not None
    lost = threading.Event()
    keeper = LeaseKeeper(
        client.store,
        session_id="keep",
        run_id=handle.run_id,
        token=claimed[1],
        renew_s=0.05,
        on_lost=lost.set,
    )
    keeper.start()
    try:
        assert not lost.wait(0.3)  # renewals keep succeeding while the lease is ours
        assert redis_client.pttl(client.keys.lease("keep")) > 0
        redis_client.set(client.keys.lease("keep"), "someone-else")
        assert lost.wait(10)
    finally:
        keeper.stop()
