"""A spare horse's rehearsal (worker/rehearsal.py) runs its steps without raising and
without Redis: the spare ignores its errors, so a broken one would go unnoticed."""

from __future__ import annotations

import redis

from shared.keys import keys_from
from shared.settings import Settings
from worker.context import WorkerContext
from worker.rehearsal import rehearse


def test_the_rehearsal_runs_and_never_talks_to_redis() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", key_prefix="rehearsal")
    # Port 1: any command would raise ConnectionError.
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    ctx = WorkerContext(
        settings=settings,
        redis=unreachable,
        keys=keys_from(settings),
        worker_name="w",
        host="h",
        warm=None,
        exec_prefix=(),
    )
    rehearse(ctx)
