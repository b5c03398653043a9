"""One RQ scheduler process per deployment, not one per worker.

Each worker also listens on a queue of its own; its scheduler lock was free for every
worker, so every worker forked a scheduler. Now only the holder of the shared queues'
locks does (the others take over when it dies, through RQ's maintenance).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.settings import Settings
from tests.conftest import WorkerFactory

WORKERS = 3
LISTENING = b"*** Listening on"  # RQ logs it after its scheduler step, as its loop starts
LIMIT_S = 60.0


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def test_one_scheduler_process_for_three_workers(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    workers = [start_worker(f"sched{i}", mode="fork") for i in range(WORKERS)]
    logs = [tmp_path / f"sched{i}.log" for i in range(WORKERS)]
    deadline = time.monotonic() + LIMIT_S
    while not all(log.exists() and LISTENING in log.read_bytes() for log in logs):
        assert time.monotonic() < deadline, "the workers did not start listening"
        assert all(w.poll() is None for w in workers), "a worker exited"
        time.sleep(0.05)  # polling files the workers write; nothing to block on
    # Idle fork-mode workers have no child but a scheduler process.
    children = {w.pid: _children(w.pid) for w in workers}
    assert sum(len(c) for c in children.values()) == 1, children
    (scheduler,) = (pid for pids in children.values() for pid in pids)
    assert os.path.exists(f"/proc/{scheduler}")
