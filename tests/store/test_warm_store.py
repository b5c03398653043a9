"""Warm advertisements in the RunStore, on a real Redis: who holds which session warm."""

from __future__ import annotations

import time

import redis

from shared.runstore import RunStore


def test_a_worker_advertises_its_warm_sessions_and_withdraws_only_its_own(
    store: RunStore, redis_client: redis.Redis
) -> None:
    now = time.time()
    store.advertise_warm("w1", {"s1": now + 60, "s2": now + 30, "gone": now - 1})
    assert store.warm_owner("s1") == "w1" and store.warm_owner("s2") == "w1"
    assert store.warm_owner("gone") is None  # already expired: not advertised
    assert store.warm_sessions("w1") == {"s1": now + 60, "s2": now + 30}
    assert 29_000 < redis_client.pttl(store.keys.warm_owner("s2")) <= 30_000
    assert 59_000 < redis_client.pttl(store.keys.worker_warm("w1")) <= 60_000
    # Another worker took s2 over: w1 withdrawing it must not remove w2's claim.
    store.advertise_warm("w2", {"s2": now + 60})
    store.withdraw_warm("w1", ["s1", "s2"])
    assert store.warm_owner("s1") is None
    assert store.warm_owner("s2") == "w2"
    assert store.warm_sessions("w1") == {}
    # Advertising replaces the worker's whole index.
    store.advertise_warm("w2", {"s3": now + 60})
    assert store.warm_sessions("w2") == {"s3": now + 60}


def test_junk_in_a_warm_index_is_skipped(store: RunStore, redis_client: redis.Redis) -> None:
    redis_client.hset(store.keys.worker_warm("w1"), mapping={"ok": "1.5", "bad*": "2", "x": "no"})
    assert store.warm_sessions("w1") == {"ok": 1.5}
