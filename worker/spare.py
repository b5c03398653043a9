"""A spare work horse: forked while the worker waits for a job, handed the next one.

RQ forks a work horse after it has dequeued a job, so every run waits for the fork and
for the horse's first steps in a copy of the worker's memory: each page it writes to
is copied first (~5 us a page on this project's 2-core VM, thousands of pages), and it
opens its Redis connections anew. Measured with `python -m bench --only dispatch`, a
forked horse took submit -> `started` to 1.84-1.88x a bare RQ job, where a worker that
does not fork (`--mode simple`) reached 0.77x.

Here the next horse is forked ahead, just before the worker waits on its queues. It
sets itself up as RQ's horse does (own process group, the horse's signal handling,
SIGKILL when the worker dies), connects to Redis, then blocks on a pipe. When a job
comes, the worker writes one line naming the job, its queue and its RQ execution; the
spare fetches both from Redis and runs RQ's `main_work_horse`, exactly as a freshly
forked horse would. The worker then monitors it like any horse (same pid bookkeeping,
same kill). A spare that is gone or cannot take the line is reaped and the job forked
the usual way; a spare never used is SIGKILLed and reaped at teardown.

The pipe's write end stays in the worker, but other processes it forks later (RQ's
scheduler, later horses) inherit a copy, so the spare never waits for end-of-file: a
handoff is one line, and nothing but that line starts a job.

A spare runs more than one job (HORSE_RUNS, default 100). After a job it writes one byte
on a second pipe, whose only write end it holds, and waits for the next line; the worker
takes that byte as the horse's clean exit and keeps the process as its spare. A forked
horse copies every page it writes to (a fresh one ~3,800 a run here, ~19 ms of CPU in
the scale benchmark), and a horse that already ran a job has its own copies. The horse
exits instead, and the worker sees it as it sees any horse's exit, when it has run its
last job, when a thread or a child process outlived the job, or when the job raised (as
RQ's horse does). A horse that is killed (cancel by RQ, job timeout, cold shutdown)
closes the byte's pipe by dying: the worker then reaps it and reads its status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

import redis
import structlog
from pydantic import ValidationError
from redis.connection import Connection
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.worker.base import logger as rq_horse_logger

from worker.handoff import Handoff, await_done, read_handoff
from worker.proctree import die_with_parent, set_process_name

log = structlog.get_logger(__name__)

SPARE_NAME = "cq-spare"  # its /proc/<pid>/comm while it waits
# Connections a run holds at once: its main thread, the held write line
# (shared/runstore/line.py), the lease heartbeat and the control subscription.
_RUN_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class Spare:
    pid: int
    handoff_fd: int  # the handoff pipe's write end, in the worker
    done_fd: int  # the done pipe's read end: a byte after each job it follows with another
    runs: int = 0  # jobs handed to it so far


@dataclass(slots=True)
class _Busy:
    """A spare running a job, as the worker's wait_for_horse sees it."""

    spare: Spare
    done: bool = False  # it wrote its byte: the job is over and it waits for the next
    exited: bool = False  # it closed the done pipe without the byte: reap it


class SpareHorseMixin:
    """For RQ's forking `Worker`: the next work horse is forked before the job comes."""

    # RQ's, as this mixin uses them.
    name: str
    connection: Any
    queues: list[Queue]
    job_class: Any
    queue_class: type[Queue]
    serializer: Any
    death_penalty_class: Any
    executions: dict[str, Execution]
    _horse_pid: int
    _stop_requested: bool
    _spare: Spare | None = None
    _busy: _Busy | None = None
    # A stop signal that came while os.fork() ran its at-fork hooks: handled after.
    _forking: bool = False
    _deferred_stops: list[tuple[Callable[[int, FrameType | None], None], int]] | None = None

    # -- in the worker ---------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, *args: Any, **kwargs: Any) -> Any:
        if self._spare is None and not self._stop_requested and self._wants_spare():
            self._fork_spare()
        return super().dequeue_job_and_maintain_ttl(timeout, *args, **kwargs)  # type: ignore[misc]

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        spare, self._spare = self._spare, None
        # RQ's prepare_execution recorded the job's execution just before this call.
        execution = next(iter(self.executions.values()), None)
        if spare is not None:
            if execution is not None and _hand_over(spare, job, queue, execution):
                os.environ["RQ_WORKER_ID"] = self.name  # as RQ's fork sets them, in both
                os.environ["RQ_JOB_ID"] = job.id
                self._horse_pid = spare.pid
                self._busy = _Busy(dataclasses.replace(spare, runs=spare.runs + 1))
                return
            self._discard(spare)  # it never ran this job
        super().fork_work_horse(job, queue)  # type: ignore[misc]

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        """RQ's wait, or for a spare: its done byte (an exit status of 0) or its exit.

        RQ's monitor calls this again after its alarm interrupts it (to heartbeat), so
        what was seen is kept in self._busy and nothing is consumed here."""
        busy = self._busy
        if busy is None or busy.exited:
            return super().wait_for_horse()  # type: ignore[misc, no-any-return]
        if busy.done or await_done(busy.spare.done_fd):
            busy.done = True
            return busy.spare.pid, os.EX_OK, None
        busy.exited = True
        return super().wait_for_horse()  # type: ignore[misc, no-any-return]

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Execution) -> None:
        pid = self._horse_pid
        try:
            super().monitor_work_horse(job, queue, execution)  # type: ignore[misc]
        finally:
            busy, self._busy = self._busy, None
            if busy is not None and busy.done:
                with contextlib.suppress(OSError):
                    os.read(busy.spare.done_fd, 64)  # its byte, there since poll said so
                self._spare = busy.spare  # it runs the next job
            else:
                if busy is not None:
                    _close(busy.spare)
                self._horse_ended(pid)

    def teardown(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._discard(spare)
        super().teardown()  # type: ignore[misc]

    def _discard(self, spare: Spare) -> None:
        discard(spare)
        if spare.runs:
            self._horse_ended(spare.pid)

    def _horse_ended(self, pid: int) -> None:
        """A work horse that ran a job is gone (worker classes absorb its metrics)."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._defer(self.request_stop, signum):
            return
        super().request_stop(signum, frame)  # type: ignore[misc]

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._defer(self.request_force_stop, signum):
            return
        super().request_force_stop(signum, frame)  # type: ignore[misc]

    def _defer(self, handler: Callable[[int, FrameType | None], None], signum: int) -> bool:
        """Whether a stop signal must wait until os.fork() has returned.

        Python runs signal handlers between bytecodes, also in os.fork()'s at-fork hooks
        (logging's, in the parent), and there an exception is printed and dropped: the
        StopRequested or SystemExit RQ's handler raises, and with it the stop, was lost
        (a SIGTERM in that window left an idle worker waiting on its queues)."""
        if not self._forking:
            return False
        if self._deferred_stops is None:
            self._deferred_stops = []
        self._deferred_stops.append((handler, signum))
        return True

    def _fork_spare(self) -> None:
        """Fork a spare into self._spare (left None if the fork fails)."""
        # All four close on exec: the CLI never holds them.
        (read_fd, write_fd), (done_read, done_write) = os.pipe(), os.pipe()
        self._forking = True
        try:
            pid = os.fork()
        except OSError as exc:
            self._forking = False
            for fd in (read_fd, write_fd, done_read, done_write):
                os.close(fd)
            log.warning("spare_horse_not_forked", error=str(exc))
            self._run_deferred_stops()
            return
        finally:
            self._forking = False
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(write_fd)
            os.close(done_read)
            self._serve_as_spare(read_fd, done_write)
        os.close(read_fd)
        os.close(done_write)  # the spare's is then the only one: its exit closes the pipe
        # Teardown ends it, whatever follows.
        self._spare = Spare(pid=pid, handoff_fd=write_fd, done_fd=done_read)
        self._run_deferred_stops()

    def _run_deferred_stops(self) -> None:
        deferred, self._deferred_stops = self._deferred_stops, None
        for handler, signum in deferred or ():
            handler(signum, None)  # may raise StopRequested / SystemExit, as RQ means it to

    # -- in the spare ----------------------------------------------------------

    def _serve_as_spare(self, read_fd: int, done_fd: int) -> NoReturn:  # pragma: no cover
        """Set up as RQ's horse would, then run the jobs handed over (module doc); runs in
        the child only, and never returns."""
        try:
            os.setpgrp()  # as RQ's horse: its own group, for RQ's kill_horse
            die_with_parent()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            was_named = set_process_name(SPARE_NAME)  # `ps` tells the waiting spare apart
            with contextlib.suppress(redis.RedisError):  # the job's own calls will say
                open_connections(self.connection, _RUN_CONNECTIONS)
            with contextlib.suppress(Exception):  # only a head start; the job says more
                self._warm_up()
            random.seed()  # RQ's horse steps (main_work_horse), once for all its jobs
            self._is_horse = True
            self.log = rq_horse_logger
            runs = self._horse_runs()
            for run in range(1, runs + 1):
                handoff = read_handoff(read_fd)
                if handoff is None:  # the worker went away, or wrote no job
                    os._exit(0)
                set_process_name(was_named)  # a horse now, named as the worker is
                self._perform_handed(handoff)
                if run == runs or not _fit_for_another():
                    break
                set_process_name(SPARE_NAME)
                os.write(done_fd, b".")  # the worker's "exit status 0"; then the next line
        except BaseException as exc:  # the horse's end is its exit code, as in RQ's
            with contextlib.suppress(Exception):
                log.error("spare_horse_failed", error=str(exc)[:500])
            os._exit(1)
        os._exit(0)

    def _perform_handed(self, handoff: Handoff) -> None:  # pragma: no cover - child only
        job = self.job_class.fetch(
            handoff.job_id, connection=self.connection, serializer=self.serializer
        )
        queue = self._queue_named(handoff.queue)
        execution = Execution.fetch(handoff.execution_id, job.id, connection=self.connection)
        execution._job = job
        self.executions = {execution.id: execution}
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = job.id
        self.perform_job(job, queue, execution)  # type: ignore[attr-defined]

    def _wants_spare(self) -> bool:
        """Whether to fork spares at all (worker classes ask their settings)."""
        return True

    def _horse_runs(self) -> int:
        """How many jobs one spare runs before it exits (worker classes ask their settings)."""
        return 1

    def _warm_up(self) -> None:
        """What a spare runs ahead of its job (worker classes add theirs)."""

    def _queue_named(self, name: str) -> Queue:
        for queue in self.queues:
            if queue.name == name:
                return queue
        return self.queue_class(
            name,
            connection=self.connection,
            job_class=self.job_class,
            serializer=self.serializer,
            death_penalty_class=self.death_penalty_class,
        )


def _hand_over(spare: Spare, job: Job, queue: Queue, execution: Execution) -> bool:
    """Write the handoff line; False (nothing started) if the spare cannot take it."""
    try:
        line = Handoff(job_id=job.id, queue=queue.name, execution_id=execution.id).line()
        written = os.write(spare.handoff_fd, line)  # < PIPE_BUF: one atomic write
    except ValidationError as exc:
        log.warning("spare_horse_skipped", reason="names it cannot carry", error=str(exc)[:300])
        return False
    except OSError as exc:  # the spare is gone (EPIPE)
        log.warning("spare_horse_gone", pid=spare.pid, error=str(exc))
        return False
    return written == len(line)


def _fit_for_another() -> bool:  # pragma: no cover - runs in a work horse
    """Whether a horse is as it was before its job: one thread, no child process."""
    if threading.active_count() != 1:
        log.warning("work_horse_retired", reason="a thread outlived the job")
        return False
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    log.warning("work_horse_retired", reason="a child process outlived the job")
    return False


def _close(spare: Spare) -> None:
    for fd in (spare.handoff_fd, spare.done_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def discard(spare: Spare) -> None:
    """End a spare that will not run a job: close its pipes, SIGKILL it, reap it."""
    _close(spare)
    _end(spare.pid)


def _end(pid: int) -> None:
    # A spare runs nothing of a run's: no tree to sweep, only the process.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def open_connections(client: redis.Redis, count: int) -> None:
    """Leave `count` connected connections in the client's pool (this process's own,
    after a fork), each checked as the pool checks one it hands out."""
    pool = client.connection_pool
    taken: list[Connection] = []
    try:
        for _ in range(count):
            taken.append(pool.get_connection())  # connects, and says so if it cannot
    finally:
        for connection in taken:
            pool.release(connection)
