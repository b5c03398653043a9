"""RQ's scheduler process, made to die with the worker that forked it.

RQ forks its scheduler (delayed runs: RQ's scheduled registry) as a process of its own.
A worker stopped normally kills it; a SIGKILLed worker left it running, holding the
scheduler lock and a pub/sub connection, an orphan nobody owns. Here the scheduler asks
the kernel for SIGKILL when its worker dies (PR_SET_PDEATHSIG), as work horses and CLIs do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import redis
from rq.scheduler import RQScheduler

from worker.proctree import die_with_parent


class WorkerBoundScheduler(RQScheduler):
    """An RQScheduler whose process goes when its worker goes."""

    _worker_pid = 0
    # RQ rebuilds the scheduler's connection from the worker's pool kwargs, which
    # cannot describe a Sentinel-managed pool; the worker hands its own factory instead.
    connect: Callable[[], redis.Redis] | None = None

    @property
    def connection(self) -> Any:
        if self._connection is None and self.connect is not None:
            self._connection: Any = self.connect()
        return super().connection

    def start(self) -> Any:
        self._worker_pid = os.getpid()  # the forking process, before the fork
        return super().start()  # type: ignore[no-untyped-call]

    def work(self) -> None:
        die_with_parent()
        if os.getppid() != self._worker_pid:  # the worker died before the request took
            return
        super().work()  # type: ignore[no-untyped-call]


def start_scheduler(
    worker: Any,
    *,
    connect: Callable[[], redis.Redis],
    burst: bool,
    logging_level: str | None,
    date_format: str,
    log_format: str,
) -> None:
    """RQ's BaseWorker._start_scheduler, with WorkerBoundScheduler: take the scheduler
    lock if free; a burst worker enqueues what is due and lets go, any other starts the
    scheduler process."""
    scheduler: Any = WorkerBoundScheduler(
        worker.queues,
        connection=worker.connection,
        logging_level=logging_level if logging_level is not None else worker.log.level,
        date_format=date_format,
        log_format=log_format,
        serializer=worker.serializer,
    )
    scheduler.connect = connect
    worker.scheduler = scheduler
    scheduler.acquire_locks()
    if not scheduler.acquired_locks:
        return
    if not burst:
        scheduler.start()
        return
    try:
        scheduler.register_birth()
        scheduler.enqueue_scheduled_jobs()
    finally:
        scheduler.release_locks()
        scheduler.register_death()
