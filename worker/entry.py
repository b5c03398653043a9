"""Process entry of `claude-queue worker`: build a worker, run RQ's loop, and keep working
through Redis outages (RQ's own loop gives up; this waits for Redis and starts again).

The worker classes themselves are in worker/rqworker.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING

import redis
import structlog

from shared.backoff import Backoff, reconnect_backoff
from shared.connection import sync_redis
from shared.exitcodes import ExitCode
from shared.logging import configure_logging
from shared.scheduling import served_queue_names
from shared.settings import Settings
from shared.urls import redact_url
from worker.cron import start_cron_ticker
from worker.rqworker import ForkingClaudeWorker, SimpleClaudeWorker, WorkerMode

if TYPE_CHECKING:
    from worker.archiver import Archiver
    from worker.metrics import WorkerMetrics

log = structlog.get_logger(__name__)


def default_worker_name(settings: Settings) -> str:
    """`<host>.<pid>` unless settings name the worker."""
    return settings.worker_name or f"{socket.gethostname()}.{os.getpid()}"


def build_worker(
    settings: Settings,
    *,
    name: str | None = None,
    mode: WorkerMode = "fork",
    metrics: WorkerMetrics | None = None,
) -> ForkingClaudeWorker | SimpleClaudeWorker:
    """A worker on the configured queue, with these settings."""
    worker_class = ForkingClaudeWorker if mode == "fork" else SimpleClaudeWorker
    return worker_class(
        served_queue_names(settings.queue_name),  # high, default, low: served in order
        name=name or default_worker_name(settings),
        connection=sync_redis(settings),
        settings=settings,
        metrics=metrics,
    )


def run_worker(
    settings: Settings,
    *,
    name: str | None = None,
    burst: bool = False,
    mode: WorkerMode = "fork",
    metrics: WorkerMetrics | None = None,
) -> int:
    """Process entry of `claude-queue worker`: work the queue until stopped."""
    configure_logging(settings)
    rq_worker = build_worker(settings, name=name, mode=mode, metrics=metrics)
    try:
        rq_worker.connection.ping()
    except (redis.RedisError, OSError) as exc:
        log.error(
            "redis_unreachable", redis=settings.redis_url_redacted, error=redact_url(str(exc))
        )
        return ExitCode.REDIS_UNREACHABLE
    # The archive drainer (None when the archive is off): a burst worker drains first.
    archiver: Archiver | None = None
    if settings.archive_enabled:  # psycopg is imported only then
        from worker.archiver import start_archiver

        archiver = start_archiver(settings, consumer=rq_worker.name)
    # With RQ's scheduler (delayed runs), the cron ticker (None without the scheduler).
    ticker = None if burst else start_cron_ticker(settings)
    try:
        return _work(rq_worker, settings, burst=burst, mode=mode, metrics=metrics)
    finally:
        if ticker is not None:
            ticker.stop()
        if archiver is not None:
            archiver.stop(drain_s=settings.shutdown_grace_s if burst else 0.0)


def _work(
    rq_worker: ForkingClaudeWorker | SimpleClaudeWorker,
    settings: Settings,
    *,
    burst: bool,
    mode: WorkerMode,
    metrics: WorkerMetrics | None,
) -> int:
    while True:
        try:
            rq_worker.work(
                burst=burst,
                with_scheduler=settings.scheduler,
                logging_level=settings.log_level.upper(),
            )
            # Outside burst mode RQ's loop returns only when asked to stop, or when it
            # "found an unhandled exception, quitting" (it logs it and returns): e.g.
            # Redis reset during its heartbeat right after a dequeue. Work on.
            asked = rq_worker._stop_requested or rq_worker._shutdown_requested_date is not None
            if burst or asked:  # RQ's SIGTERM handler notes the date, idle or busy
                return ExitCode.OK
            log.warning("worker_loop_quit_unasked", note="waiting for Redis, then working again")
        except redis.ConnectionError as exc:
            # RQ's own loop gives up when Redis is away at the wrong moment (e.g.
            # checking a job whose horse died). Wait for Redis, then work again.
            log.warning("worker_loop_lost_redis", error=str(exc))
        _await_redis(rq_worker, reconnect_backoff(settings))
        with contextlib.suppress(redis.RedisError):
            rq_worker.register_death()  # type: ignore[no-untyped-call]
        rq_worker = build_worker(settings, name=rq_worker.name, mode=mode, metrics=metrics)


def _await_redis(rq_worker: ForkingClaudeWorker | SimpleClaudeWorker, backoff: Backoff) -> None:
    delays = backoff.delays()
    while True:
        try:
            rq_worker.connection.ping()
            return
        except redis.RedisError:
            time.sleep(next(delays))
