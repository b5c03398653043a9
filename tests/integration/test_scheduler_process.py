"""RQ's scheduler process goes with the worker that forked it, even a SIGKILLed one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import WorkerFactory
from tests.helpers import is_spare
from worker.proctree import is_alive, read_stat

WAIT_S = 30.0


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or is_spare(int(entry.name)):  # worker/spare.py
            continue
        if (stat := read_stat(int(entry.name))) and stat.ppid == pid:
            found.add(stat.pid)
    return found


def _await(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_sigkilled_workers_scheduler_process_dies_with_it(
    start_worker: WorkerFactory,
) -> None:
    worker = start_worker()  # fork mode, scheduler on (the default): idle, one child
    # besides its spare work horse
    scheduler: set[int] = set()

    def scheduler_started() -> bool:
        scheduler.update(_children(worker.pid))
        return bool(scheduler)

    _await(scheduler_started, "the worker started no scheduler process")
    (pid,) = scheduler
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=WAIT_S)
    _await(lambda: not is_alive(pid), "the scheduler process outlived its worker")
