"""The RQ worker classes that run prompt jobs (`claude-queue worker`'s entry: worker/entry.py).

A worker class is a whole claude-queue worker: it builds its context (from the
settings it is given, or from CLAUDE_QUEUE_* variables), guards which jobs run,
keeps the maintenance thread and records each run's end truthfully in RQ. So
stock `rq worker --worker-class worker.rqworker.ForkingClaudeWorker` and
`rq worker-pool` run our jobs exactly as `claude-queue worker` does.

Every worker also listens, first, on a queue of its own (shared/rqjobs.py), where
`submit` puts the next run of a session this worker advertises as warm and idle.
When it starts a job it withdraws its advertisements and moves whatever waits on
its own queue to the shared queue (it is busy now); after the job it advertises its
warm sessions again; when it stops it closes them and advertises nothing.

How a run ended, and what RQ records for its job:
  succeeded, or skipped (a delivery that was not ours)  -> finished
  interrupted                                           -> canceled (canceled registry)
  failed, timed_out, lost, ...                          -> failed, exc_info = the reason
"""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import redis
import structlog
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.serializers import JSONSerializer

from shared.connection import server_of, sync_redis
from shared.envnames import SettingsError
from shared.events import RunStatus
from shared.exitcodes import ExitCode
from shared.keys import keys_from
from shared.logging import configure_logging
from shared.rqjobs import (
    canceled_writes,
    mark_canceled,
    prune_canceled,
)
from shared.settings import Settings
from shared.version import package_version
from worker.context import WorkerContext
from worker.heartbeat import OneTripHeartbeatMixin
from worker.job import RunEnded, RunInterrupted, bound_context
from worker.jobguard import (
    GuardedJob,
    guarded_job_class,
    refusal_reason,
    refuse,
    shown_function,
    stored_call,
)
from worker.maintenance import Maintenance
from worker.proctree import (
    death_signal_prefix,
    die_with_parent,
    enable_subreaper,
    hide_environment,
    kill_run_tree,
)
from worker.reaper import finish_for_worker, kill_orphans
from worker.rehearsal import rehearse
from worker.routing import OwnQueueMixin, queue_list, queue_names, warm_pool
from worker.scheduler import start_scheduler
from worker.spare import SpareHorseMixin
from worker.webhooks import enqueue_for_run

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics

log = structlog.get_logger(__name__)

WorkerMode = Literal["fork", "simple"]


class _ClaudeWorkerMixin(OwnQueueMixin, OneTripHeartbeatMixin):
    """What a claude-queue worker adds to an RQ worker class."""

    mode: ClassVar[WorkerMode]
    # Class-level too: `rq info` and other tools build workers without our __init__ args.
    job_class = GuardedJob
    name: str
    connection: redis.Redis
    queues: list[Queue]
    _ordered_queues: list[Queue]
    queue_class: type[Queue]
    serializer: Any
    death_penalty_class: Any
    default_result_ttl: int
    _stop_requested: bool
    _shutdown_requested_date: Any  # RQ's: when a warm shutdown was asked for, else None
    pubsub: Any  # RQ's: a PubSub, or None before subscribe()
    pubsub_thread: Any  # RQ's: a PubSubWorkerThread, or None

    def __init__(self, queues: Any, *args: Any, settings: Settings | None = None, **kwargs: Any):
        if kwargs.get("connection") is None:
            kwargs["connection"] = next(
                (q.connection for q in queue_list(queues) if isinstance(q, Queue)), None
            )
        # The job guard relies on the JSON serializer, which never imports anything.
        kwargs["job_class"] = guarded_job_class(kwargs.get("job_class"))
        kwargs["serializer"] = JSONSerializer
        self._metrics: WorkerMetrics | None = kwargs.pop("metrics", None)
        super().__init__(queue_names(queues), *args, **kwargs)  # type: ignore[call-arg]
        self._settings = settings
        self._horse_pids: list[int] = []  # work horses whose metric files to absorb
        self._context: WorkerContext | None = None
        self._maintenance: Maintenance | None = None
        self._ended: RunEnded | None = None
        self._own_queue: Queue | None = None

    # -- context -------------------------------------------------------------

    @property
    def context(self) -> WorkerContext:
        """Settings, Redis and names every run needs; built on first use."""
        if self._context is None:
            settings = self._settings or Settings.from_environment()
            self._context = WorkerContext(
                settings=settings,
                redis=self.connection,
                keys=keys_from(settings),
                worker_name=self.name,
                host=socket.gethostname(),
                warm=warm_pool(settings, self.mode, on_park=self._become_idle),
                exec_prefix=death_signal_prefix(),
            )
        return self._context

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """Start of work(): context, logging, subreaper, leftovers, maintenance; then RQ's."""
        try:
            ctx = self.context
        except SettingsError as exc:
            # Before logging is configured: one line, as every command prints it.
            print(f"error: invalid configuration: {exc}", file=sys.stderr)
            raise SystemExit(ExitCode.USAGE) from None
        settings = ctx.settings
        # Ours first: RQ then finds a handler and adds none of its own.
        configure_logging(settings)
        subreaper = enable_subreaper()
        environment_hidden = hide_environment()
        # Looked up once here; each forked horse would probe the disk for it (~0.3 ms).
        tempfile.gettempdir()
        self._listen_on_own_queue(settings)
        super().bootstrap(*args, **kwargs)  # type: ignore[misc]
        log.info(
            "worker_starting",
            worker=self.name,
            queue=settings.queue_name,
            redis=settings.redis_url_redacted,
            mode=self.mode,
            version=package_version(),
            subreaper=subreaper,
            environment_hidden=environment_hidden,
        )
        self._warn_if_mismatched(settings)
        try:
            # A previous process of this name may have died advertising (SIGKILL).
            self._withdraw_warm()
        except redis.RedisError as exc:
            log.warning("warm_withdraw_failed", error=str(exc))
        kill_orphans(ctx.store)
        metrics = self._metrics
        self._maintenance = Maintenance(ctx) if metrics is None else metrics.maintenance(ctx)
        self._maintenance.start()

    def _warn_if_mismatched(self, settings: Settings) -> None:
        names = [q.name for q in self.queues]
        if settings.queue_name not in names:
            # Jobs still run; lost runs of these queues are reaped only by a worker of theirs.
            log.warning("queue_not_configured", queues=names, configured=settings.queue_name)
        if not settings.redis_sentinels and server_of(
            self.connection.connection_pool.connection_kwargs
        ) != server_of(
            redis.connection.parse_url(settings.redis_url.get_secret_value())  # type: ignore[no-untyped-call]
        ):
            log.warning(
                "redis_url_mismatch",
                detail="RQ's connection and CLAUDE_QUEUE_REDIS_URL name different servers",
                configured=settings.redis_url_redacted,
            )

    def teardown(self) -> None:
        if self._maintenance is not None:
            self._maintenance.stop()
            self._maintenance = None
        if self._context is not None:
            if self._context.warm is not None:
                self._context.warm.close_all()
            self._become_busy()  # nothing advertised, nothing left waiting on our queue
        super().teardown()  # type: ignore[misc]
        if self._metrics is not None:  # the spare's, if it ran jobs (worker/spare.py)
            self._metrics.absorb_horses(self._horse_pids)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
    ) -> None:
        # RQ's, with a scheduler process that dies with this worker (worker/scheduler.py).
        settings = self.context.settings
        start_scheduler(
            self,
            connect=lambda: sync_redis(settings),
            queue_name=settings.queue_name,
            burst=burst,
            logging_level=logging_level,
            date_format=date_format,
            log_format=log_format,
        )

    def unsubscribe(self) -> None:
        # RQ's own unsubscribes, then stops its pubsub thread; with redis-py >= 8.2,
        # whose stop() joins, a thread that read the UNSUBSCRIBE reply first sat out its
        # 60 s wait for a subscription: burst workers took a minute to exit. So the
        # thread's flag goes first, and the reply then ends its loop.
        thread = self.pubsub_thread
        if thread is None:
            return
        thread.stop(timeout=0)
        with contextlib.suppress(redis.RedisError):
            if self.pubsub is not None:
                self.pubsub.unsubscribe()
        thread.join(timeout=1)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        with contextlib.suppress(redis.RedisError):
            prune_canceled(self.connection, [q.name for q in self.queues])

    # -- one job -------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        queue = self._shared_queue(job, queue)
        # Judged here, in the worker's main process, before a horse is forked (fork
        # mode) or anything performed (simple mode): a refused job imports nothing.
        call = stored_call(job)
        reason = refusal_reason(call)
        if reason is not None:
            self._refuse(job, queue, reason, function=shown_function(call))
            return
        self._become_busy()
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            try:
                self._after_job(job)
            except redis.RedisError as exc:
                # The reaper ends the run once its lease expires; the worker goes on.
                log.warning("after_job_check_failed", run_id=job.id, error=str(exc))
            if self._metrics is not None:
                self._metrics.after_job(job, self._horse_pids)
            self._become_idle()
            if self.context.warm is not None:
                self.context.warm.close_evicted()  # after the run's `finished`

    def _horse_ended(self, pid: int) -> None:
        if self._metrics is not None and pid:
            self._horse_pids.append(pid)

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        if getattr(self, "_is_horse", False):
            # A work horse must not outlive its worker (its CLI dies with it in turn).
            die_with_parent()
        self._ended = None
        try:
            with bound_context(self.context, self._metrics):
                return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            structlog.contextvars.clear_contextvars()

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        exc = exc_info[1] if len(exc_info) > 1 else None
        if not isinstance(exc, RunEnded):
            super().handle_exception(job, *exc_info)  # type: ignore[misc]
            return
        # A run that ended unsuccessfully is no crash: one log line, no traceback.
        self._ended = exc
        canceled = isinstance(exc, RunInterrupted)
        log.info(
            "rq_job_canceled" if canceled else "rq_job_failed",
            run_id=job.id,
            status=exc.status,
            reason=exc.reason,
        )
        if not canceled:
            call_exception_handlers(self._exc_handlers, job, *exc_info)  # type: ignore[attr-defined]

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        ended, self._ended = self._ended, None
        if isinstance(ended, RunInterrupted):
            self._record_canceled(job, execution)
            return
        if ended is not None:
            # The run is over: RQ must not run it again (a retry would only be skipped).
            job.retries_left = None
            exc_string = ended.one_line()
        super().handle_job_failure(  # type: ignore[misc]
            job,
            queue,
            started_job_registry=started_job_registry,
            exc_string=exc_string,
            execution=execution,
        )

    def _record_canceled(self, job: Job, execution: Any) -> None:
        """RQ's bookkeeping for an interrupted run: out of started, into canceled."""
        ttl_s = job.get_result_ttl(self.default_result_ttl)
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)  # type: ignore[attr-defined]
            canceled_writes(pipe, job.origin, job.id, ttl_s=-1 if ttl_s is None else ttl_s)
            pipe.execute()

    def _refuse(self, job: Job, queue: Queue, reason: str, *, function: str) -> None:
        log.error("job_refused", job_id=job.id, function=function, reason=reason)
        refuse(self.context.redis, job, queue, reason)
        # Only the `rq info` counter: the refusal itself is already stored.
        with contextlib.suppress(redis.RedisError):
            self.increment_failed_job_count()  # type: ignore[attr-defined]

    def _after_job(self, job: Job) -> None:
        ctx, run_id = self.context, job.id
        # A run still open here lost its work horse (job timeout, cold shutdown,
        # crash). The CLI's descendants were reparented to us (subreaper): end
        # them, then write the terminal event the horse could not.
        if ctx.store.running_session(run_id) is not None:
            leftovers = kill_run_tree(run_id, None)
            log.warning("run_leftovers_killed", run_id=run_id, processes=leftovers)
            if finish_for_worker(ctx.store, worker_name=self.name, run_id=run_id):
                log.warning("run_interrupted_by_worker_stop", run_id=run_id)
                if self._metrics is not None:
                    self._metrics.run_ended_elsewhere(RunStatus.INTERRUPTED)
                ttl_s = job.get_result_ttl(self.default_result_ttl)
                mark_canceled(ctx.redis, job.origin, run_id, ttl_s=-1 if ttl_s is None else ttl_s)
                enqueue_for_run(ctx.redis, ctx.settings, run_id)  # its webhook, if any

    # -- shutdown ------------------------------------------------------------

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
        session_id = ctx.store.running_session(run_id)
        if session_id is None:
            return
        log.warning("shutdown_grace_over", run_id=run_id)
        # As a client would: the flag and the message, atomically, to the run's owner (us).
        ctx.store.cancel(session_id, run_id, reason="the worker is shutting down")


class ForkingClaudeWorker(_ClaudeWorkerMixin, SpareHorseMixin, Worker):
    """Runs jobs in a work horse, forked ahead and kept for HORSE_RUNS jobs (worker/spare.py)."""

    mode = "fork"

    def _wants_spare(self) -> bool:
        return self.context.settings.spare_horse

    def _horse_runs(self) -> int:
        return self.context.settings.horse_runs

    def _warm_up(self) -> None:
        rehearse(self.context)  # the pure first steps of a run, ahead (worker/rehearsal.py)


class SimpleClaudeWorker(_ClaudeWorkerMixin, SimpleWorker):
    """Runs jobs in the worker process itself (no fork)."""

    mode = "simple"
