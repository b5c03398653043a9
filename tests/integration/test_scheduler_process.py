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


def _children(pid: int, *, spares: bool = False) -> set[int]:
    """pid's children; its spare work horse (worker/spare.py) only if `spares`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (not spares and is_spare(int(entry.name))):
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
        # Its spare horse names itself a moment after its fork: until it has, the
        # one other child cannot be told from it.
        spares = [pid for pid in _children(worker.pid, spares=True) if is_spare(pid)]
        scheduler.clear()
        scheduler.update(_children(worker.pid))
        return len(spares) == 1 and len(scheduler) == 1

    _await(scheduler_started, "the worker started no scheduler process")
    (pid,) = scheduler
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=WAIT_S)
    _await(lambda: not is_alive(pid), "the scheduler process outlived its worker")
