"""The RQ worker that runs prompt jobs, and its process entry point."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Literal

import redis
import structlog
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from shared.connection import sync_redis
from shared.control import CancelRequest
from shared.exitcodes import ExitCode
from shared.logging import configure_logging
from shared.settings import Settings, redact_url
from shared.store import keys_from
from worker.context import WorkerContext, text
from worker.job import bound_context
from worker.jobguard import GuardedJob, refusal_reason, refuse, shown_function, stored_call
from worker.maintenance import Maintenance
from worker.proctree import die_with_parent, enable_subreaper, hide_environment, kill_run_tree
from worker.reaper import finish_for_worker, kill_orphans

log = structlog.get_logger(__name__)

WorkerMode = Literal["fork", "simple"]

RET_OK = ExitCode.OK
RET_CONNECT = ExitCode.REDIS_UNREACHABLE


class _ContextMixin:
    """Binds the worker context around every job, and cleans up after work horses."""

    context: WorkerContext
    name: str

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        if getattr(self, "_is_horse", False):
            # A work horse must not outlive its worker (its CLI dies with it in turn).
            die_with_parent()
        try:
            with bound_context(self.context):
                return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            structlog.contextvars.clear_contextvars()

    def execute_job(self, job: Any, queue: Any) -> None:
        # Judged here, in the worker's main process, before a horse is forked (fork
        # mode) or anything performed (simple mode): a refused job imports nothing.
        call = stored_call(job)
        reason = refusal_reason(call)
        if reason is not None:
            self._refuse(job, queue, reason, function=shown_function(call))
            return
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            try:
                self._after_job(job.id)
            except redis.RedisError as exc:
                # The reaper ends the run once its lease expires; the worker goes on.
                log.warning("after_job_check_failed", run_id=job.id, error=str(exc))

    def _refuse(self, job: Any, queue: Any, reason: str, *, function: str) -> None:
        log.error("job_refused", job_id=job.id, function=function, reason=reason)
        refuse(self.context.redis, job, queue, reason)
        # Only the `rq info` counter: the refusal itself is already stored.
        with contextlib.suppress(redis.RedisError):
            self.increment_failed_job_count()  # type: ignore[attr-defined]

    def _after_job(self, run_id: str) -> None:
        ctx = self.context
        # A run still open here lost its work horse (job timeout, cold shutdown,
        # crash). The CLI's descendants were reparented to us (subreaper): end
        # them, then write the terminal event the horse could not.
        if ctx.redis.hexists(ctx.keys.running, run_id):
            leftovers = kill_run_tree(run_id, None)
            log.warning("run_leftovers_killed", run_id=run_id, processes=leftovers)
            if finish_for_worker(
                ctx.redis, ctx.keys, ctx.settings, worker_name=self.name, run_id=run_id
            ):
                log.warning("run_interrupted_by_worker_stop", run_id=run_id)

    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM: stop taking jobs; the current run gets shutdown_grace_s to end."""
        super().request_stop(signum, frame)  # type: ignore[misc]
        current = self.get_current_job_id()  # type: ignore[attr-defined]
        if current:
            grace = self.context.settings.shutdown_grace_s
            log.info("warm_shutdown", run_id=current, grace_s=grace)
            timer = threading.Timer(grace, self._cancel_for_shutdown, args=(current,))
            timer.daemon = True
            timer.start()

    def _cancel_for_shutdown(self, run_id: str) -> None:
        ctx = self.context
        session_id = text(ctx.redis.hget(ctx.keys.running, run_id))
        if session_id is None:
            return
        log.warning("shutdown_grace_over", run_id=run_id)
        request_cancel(ctx, session_id, run_id, "the worker is shutting down")


def request_cancel(ctx: WorkerContext, session_id: str, run_id: str, reason: str) -> None:
    """Ask the owner of a run (here: ourselves) to cancel it, flag first."""
    message = CancelRequest(session_id=session_id, run_id=run_id, reason=reason)
    ctx.redis.set(ctx.keys.cancel_flag(session_id, run_id), reason, ex=ctx.settings.event_log_ttl_s)
    ctx.redis.publish(ctx.keys.control(session_id, run_id), message.model_dump_json())


class ForkingClaudeWorker(_ContextMixin, Worker):
    """Forks a work horse per job (RQ's default model)."""


class SimpleClaudeWorker(_ContextMixin, SimpleWorker):
    """Runs jobs in the worker process itself (no fork)."""


def default_worker_name(settings: Settings) -> str:
    """`<host>.<pid>` unless settings name the worker."""
    return settings.worker_name or f"{socket.gethostname()}.{os.getpid()}"


def build_worker(
    settings: Settings, *, name: str | None = None, mode: WorkerMode = "fork"
) -> ForkingClaudeWorker | SimpleClaudeWorker:
    """An RQ worker on the configured queue, carrying the run context."""
    connection = sync_redis(settings)
    worker_name = name or default_worker_name(settings)
    queue = Queue(
        settings.queue_name, connection=connection, serializer=JSONSerializer, job_class=GuardedJob
    )
    worker_class = ForkingClaudeWorker if mode == "fork" else SimpleClaudeWorker
    rq_worker = worker_class(
        [queue],
        name=worker_name,
        connection=connection,
        serializer=JSONSerializer,
        job_class=GuardedJob,
    )
    rq_worker.context = WorkerContext(
        settings=settings,
        redis=connection,
        keys=keys_from(settings),
        worker_name=worker_name,
        host=socket.gethostname(),
    )
    return rq_worker


def run_worker(
    settings: Settings, *, name: str | None = None, burst: bool = False, mode: WorkerMode = "fork"
) -> int:
    """Process entry: configure logging, then work the queue until stopped."""
    configure_logging(settings)
    subreaper = enable_subreaper()
    environment_hidden = hide_environment()
    rq_worker = build_worker(settings, name=name, mode=mode)
    log.info(
        "worker_starting",
        worker=rq_worker.name,
        queue=settings.queue_name,
        redis=settings.redis_url_redacted,
        mode=mode,
        subreaper=subreaper,
        environment_hidden=environment_hidden,
    )
    try:
        rq_worker.connection.ping()
    except (redis.RedisError, OSError) as exc:
        log.error(
            "redis_unreachable", redis=settings.redis_url_redacted, error=redact_url(str(exc))
        )
        return RET_CONNECT
    ctx = rq_worker.context
    kill_orphans(ctx.redis, ctx.keys, settings)
    maintenance = Maintenance(ctx)
    maintenance.start()
    try:
        while True:
            try:
                rq_worker.work(
                    burst=burst, with_scheduler=False, logging_level=settings.log_level.upper()
                )
                return RET_OK
            except redis.ConnectionError as exc:
                # RQ's own loop gives up when Redis is away at the wrong moment (e.g.
                # checking a job whose horse died). Wait for Redis, then work again.
                log.warning("worker_loop_lost_redis", error=str(exc))
                _await_redis(rq_worker)
                with contextlib.suppress(redis.RedisError):
                    rq_worker.register_death()  # type: ignore[no-untyped-call]
                rq_worker = build_worker(settings, name=rq_worker.name, mode=mode)
    finally:
        maintenance.stop()


def _await_redis(rq_worker: ForkingClaudeWorker | SimpleClaudeWorker) -> None:
    delay = 0.1
    while True:
        try:
            rq_worker.connection.ping()
            return
        except redis.RedisError:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
