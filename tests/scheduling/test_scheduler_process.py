"""One RQ scheduler process per deployment, not one per worker.

Each worker also listens on a queue of its own; its scheduler lock was free for every
worker, so every worker forked a scheduler. Now only the holder of the shared queues'
locks does (the others take over when it dies, through RQ's maintenance).
"""

from __future__ import annotations

import os
import time

import redis
from rq.worker import Worker, WorkerStatus

from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import is_spare

WORKERS = 3
LIMIT_S = 60.0


def _all_children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def _children(pid: int) -> list[int] | None:
    """The worker's children but its spare work horse (worker/spare.py), once that has
    named itself (a moment after its fork); until then, None."""
    everyone = _all_children(pid)
    others = [p for p in everyone if not is_spare(p)]
    return others if len(others) < len(everyone) else None


def _idle(connection: redis.Redis, name: str) -> bool:
    """RQ marks a worker idle as its loop waits for a job: after its scheduler step (its
    "Listening on" line comes before that step, so it proves nothing about it)."""
    key = Worker.redis_worker_namespace_prefix + name
    return connection.hget(key, "state") == WorkerStatus.IDLE.encode()


def test_one_scheduler_process_for_three_workers(
    settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    names = [f"sched{i}" for i in range(WORKERS)]
    workers = [start_worker(name, mode="fork") for name in names]
    deadline = time.monotonic() + LIMIT_S
    while not all(_idle(redis_client, name) for name in names):
        assert time.monotonic() < deadline, "the workers did not reach their loop"
        assert all(w.poll() is None for w in workers), "a worker exited"
        time.sleep(0.05)  # polling the workers' own records; nothing to block on
    # Idle fork-mode workers have no child but a scheduler process and a spare horse,
    # which names itself a moment after its fork: counted once each worker's has.
    children = {w.pid: _children(w.pid) for w in workers}
    while any(c is None for c in children.values()):
        assert time.monotonic() < deadline, "a worker forked no spare horse"
        time.sleep(0.05)  # polling /proc; nothing to block on
        children = {w.pid: _children(w.pid) for w in workers}
    assert sum(len(c or ()) for c in children.values()) == 1, children
    (scheduler,) = (pid for pids in children.values() for pid in pids or ())
    assert os.path.exists(f"/proc/{scheduler}")
