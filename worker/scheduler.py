"""RQ's scheduler process, made to die with the worker that forked it, and to enqueue a
due run into its own priority's list.

RQ forks its scheduler (delayed runs: RQ's scheduled registry) as a process of its own.
A worker stopped normally kills it; a SIGKILLed worker left it running, holding the
scheduler lock and a pub/sub connection, an orphan nobody owns. Here the scheduler asks
the kernel for SIGKILL when its worker dies (PR_SET_PDEATHSIG), as work horses and CLIs do.

RQ enqueues a due job into the list of the queue whose registry held it: the shared
queue's own list, the default priority. A held high or low run (shared/scheduling.py)
would wait behind default runs, or ahead of low ones, and its record, which later submits
of its session place themselves by, would name a list it is not in. So the registries
this scheduler reads (`ListedRegistry`) enqueue those runs into their own list first,
each with its removal from the registry in one MULTI as RQ does, and hand RQ the rest.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable
from typing import Any

import redis
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from shared.rqjobs import PriorityListQueue, queue_worker
from shared.scheduling import PRIORITY_META, as_priority, priority_queue_name
from worker.proctree import die_with_parent
from worker.webhooks import DELIVERY_JOB_PREFIX


class ListedRegistry(ScheduledJobRegistry):
    """RQ's scheduled registry, whose due jobs that name a priority list (their meta,
    shared/runstore/placing.py) go to that list: RQ's scheduler enqueues only the jobs
    `get_jobs_to_schedule` returns, into the registry's own queue's list."""

    def get_jobs_to_schedule(
        self, timestamp: int | None = None, chunk_size: int = 1000
    ) -> list[str]:
        # Webhook retries are promote_due's alone (worker/webhooks.py): it moves each
        # one in a single script, while RQ reads here and enqueues later, so a retry both
        # moved was pushed twice, and POSTed twice.
        due = [
            job_id
            for job_id in super().get_jobs_to_schedule(timestamp, chunk_size)
            if not job_id.startswith(DELIVERY_JOB_PREFIX)
        ]
        listed: dict[str, list[Job]] = {}
        if due:
            jobs = Job.fetch_many(due, connection=self.connection, serializer=self.serializer)
            for job in jobs:
                if job is None or job.has_rate_limit:
                    continue  # RQ's own handling: a job gone, or one of RQ's rate limits
                priority = as_priority(job.meta.get(PRIORITY_META))
                list_name = priority_queue_name(self.name, priority or "default")
                if list_name != self.name:
                    listed.setdefault(list_name, []).append(job)
        if not listed:
            return due
        with self.connection.pipeline() as pipe:
            for list_name, list_jobs in listed.items():
                queue = PriorityListQueue(
                    self.name, list_name, connection=self.connection, serializer=self.serializer
                )
                for job in list_jobs:
                    queue._enqueue_job(job, pipeline=pipe, at_front=job.should_enqueue_at_front())
                    self.remove(job.id, pipeline=pipe)
            pipe.execute()
        moved = {job.id for list_jobs in listed.values() for job in list_jobs}
        return [job_id for job_id in due if job_id not in moved]


def listed_registry(queue_name: str, connection: redis.Redis, serializer: Any) -> ListedRegistry:
    """The scheduled registry of `queue_name`, as WorkerBoundScheduler reads it."""
    return ListedRegistry(queue_name, connection=connection, serializer=serializer)  # type: ignore[no-untyped-call]


class WorkerBoundScheduler(RQScheduler):
    """An RQScheduler whose process goes when its worker goes, and whose due runs go to
    their own priority's list (ListedRegistry)."""

    _worker_pid = 0
    # RQ rebuilds the scheduler's connection from the worker's pool kwargs, which
    # cannot describe a Sentinel-managed pool; the worker hands its own factory instead.
    connect: Callable[[], redis.Redis] | None = None

    @property
    def connection(self) -> Any:
        if self._connection is None and self.connect is not None:
            self._connection: Any = self.connect()
        return super().connection

    def prepare_registries(self, queue_names: Any = None) -> None:
        super().prepare_registries(queue_names)
        self._scheduled_job_registries = [
            listed_registry(r.name, self.connection, self.serializer)
            for r in self._scheduled_job_registries
        ]

    def acquire_locks(self, auto_start: bool = False) -> Any:
        """RQ's, behind one gate. RQ takes each queue's lock on its own, in set order
        (which differs between processes), so workers that start together split the
        locks and each forks a scheduler process: seen once workers started within
        milliseconds of each other. Here only the holder of the first lock by name goes
        on to take (or refresh) the others."""
        names = self._queue_names
        self._queue_names = {min(names)} if names else names
        try:
            gate = super().acquire_locks()  # type: ignore[no-untyped-call]
        finally:
            self._queue_names = names
        if not gate:
            return gate
        return super().acquire_locks(auto_start)  # type: ignore[no-untyped-call]

    def start(self) -> Any:
        self._worker_pid = os.getpid()  # the forking process, before the fork
        return super().start()  # type: ignore[no-untyped-call]

    _wake_w = -1  # the write end of the pause's self-pipe (work() makes it)

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        """SIGTERM (the worker stopping): RQ's flag, and an end to the pause."""
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # full: a wake-up is pending already
                os.write(self._wake_w, b"\0")

    def work(self) -> None:
        """RQ's loop, but its pause ends when a stop is requested. RQ sleeps its whole
        interval (1 s) first, and the worker waits for it: every worker stop took up
        to a second longer than its own work."""
        die_with_parent()
        if os.getppid() != self._worker_pid:  # the worker died before the request took
            return
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        self.register_birth()
        while not self._stop_requested:
            if self.should_reacquire_locks:
                self.acquire_locks()
            self.heartbeat()  # type: ignore[no-untyped-call]
            self.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            select.select([wake_r], [], [], self.interval)
        self.stop()  # type: ignore[no-untyped-call]


def start_scheduler(
    worker: Any,
    *,
    connect: Callable[[], redis.Redis],
    queue_name: str,
    burst: bool,
    logging_level: str | None,
    date_format: str,
    log_format: str,
) -> None:
    """RQ's BaseWorker._start_scheduler, with WorkerBoundScheduler: take the scheduler
    lock if free; a burst worker enqueues what is due and lets go, any other starts the
    scheduler process.

    The worker's own queue is left out: nothing is ever scheduled on it (delayed runs
    wait in the shared queue's registry, and runs are routed to a worker only when
    due). Its lock is free for every worker, so each forked a scheduler process of its
    own; without it, one worker per deployment holds the locks and runs the scheduler.
    """
    shared = [q for q in worker.queues if queue_worker(queue_name, q.name) is None]
    scheduler: Any = WorkerBoundScheduler(
        shared,
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
