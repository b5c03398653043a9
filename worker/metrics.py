"""The worker's Prometheus metrics: defined here, once, and built per process.

`claude-queue worker --metrics-port N` builds a `WorkerMetrics` in every worker
process (after choosing the multiprocess directory: shared/metrics.py), hands it to
the worker, and serves /metrics from one process: every process's files merged,
plus the queue's families read from Redis at scrape time. Without the option no
metric exists and nothing is imported.

A run is metered by a `RunMeter`, which the publisher tells about each event it
queues and writes (so counts follow what reached Redis) and the runner about a
cancel. Labels are low-cardinality by construction: statuses, event types and error
codes are enums, a profile must be configured, a model name must look like one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from rq.job import Job

from shared.connection import sync_redis
from shared.events import (
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    InitData,
    ResultData,
    RunStatus,
    StartedData,
)
from shared.exitcodes import ExitCode
from shared.jobs import WEBHOOK_FUNCTION
from shared.keys import keys_from
from shared.logging import configure_logging
from shared.metrics import (
    OTHER,
    PREFIX,
    absorb_dead_process,
    label_value,
    multiprocess_collector,
    queue_families,
)
from shared.settings import Settings
from worker.context import WorkerContext
from worker.maintenance import Maintenance

if TYPE_CHECKING:
    from worker.rqworker import WorkerMode

log = structlog.get_logger(__name__)

_EVENT_TYPES = frozenset(t.value for t in EventType)
_STATUSES = frozenset(s.value for s in RunStatus)
_ERROR_CODES = frozenset(c.value for c in ErrorCode)
# usage field of a CLI result -> the `kind` label of claude_queue_cli_tokens_total.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_DISPATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_CANCEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# One result cannot honestly cost more, or use more tokens; larger values are dropped.
_MAX_COST_USD = 10_000.0
_MAX_TOKENS = 10**10
DEFAULT_MODEL = "default"
# RQ's status of a delivery job after an attempt -> the `outcome` label.
_DELIVERY_OUTCOMES = {
    "finished": "delivered",
    "scheduled": "retrying",
    "queued": "retrying",
    "failed": "failed",
}
SCRAPE_REDIS_TIMEOUT_S = 2.0


def build_metrics(settings: Settings, directory: str | None) -> WorkerMetrics:
    """This process's metrics (call once, after choosing the multiprocess directory)."""
    registry = CollectorRegistry(auto_describe=False)
    return WorkerMetrics(registry, profiles=settings.profiles, directory=directory)


class WorkerMetrics:
    """Every metric a worker process records; build one per process."""

    def __init__(
        self, registry: CollectorRegistry, *, profiles: Iterable[str], directory: str | None = None
    ) -> None:
        self.profiles = frozenset(profiles)
        # The multiprocess directory this process writes to (None: values in memory).
        self.directory = directory
        self.runs_started = Counter(
            PREFIX + "runs_started", "Runs whose CLI started.", registry=registry
        )
        self.runs_finished = Counter(
            PREFIX + "runs_finished", "Runs ended, by status.", ["status"], registry=registry
        )
        self.run_duration = Histogram(
            PREFIX + "run_duration_seconds",
            "From claim to finished, of runs a worker ended.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.dispatch = Histogram(
            PREFIX + "dispatch_seconds",
            "From submit to started (across hosts: includes their clock difference).",
            buckets=_DISPATCH_BUCKETS,
            registry=registry,
        )
        self.events_published = Counter(
            PREFIX + "events_published",
            "Events written to session logs, by type.",
            ["type"],
            registry=registry,
        )
        self.errors = Counter(
            PREFIX + "errors", "Error events written, by code.", ["code"], registry=registry
        )
        self.publish_buffer = Gauge(
            PREFIX + "publish_buffer_bytes",
            "Event bytes held in memory, not yet written (they pile up while Redis is away).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.cancel = Histogram(
            PREFIX + "cancel_seconds",
            "From the owner hearing a cancel to the run's finished.",
            buckets=_CANCEL_BUCKETS,
            registry=registry,
        )
        self.runs_lost = Counter(
            PREFIX + "runs_lost", "Runs declared lost (their worker died).", registry=registry
        )
        self.cost = Counter(
            PREFIX + "cli_cost_usd",
            "What the CLI reported each result cost, in US dollars.",
            ["model", "profile"],
            registry=registry,
        )
        self.tokens = Counter(
            PREFIX + "cli_tokens",
            "Tokens the CLI reported in each result, by kind.",
            ["model", "kind"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            PREFIX + "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
            ["outcome"],
            registry=registry,
        )

    def run_meter(
        self,
        *,
        profile: str,
        model: str | None,
        submitted_at: float,
        clock: Callable[[], float] = time.time,
    ) -> RunMeter:
        """A meter for one run, labelled by its profile and requested model."""
        return RunMeter(
            self,
            profile=label_value(profile, allowed=self.profiles),
            model=label_value(model) if model else DEFAULT_MODEL,
            submitted_at=submitted_at,
            clock=clock,
        )

    def run_ended_elsewhere(self, status: RunStatus, count: int = 1) -> None:
        """Runs ended by the reaper, or by a worker whose work horse died."""
        self.runs_finished.labels(status=status.value).inc(count)
        if status is RunStatus.LOST:
            self.runs_lost.inc(count)

    def maintenance(self, ctx: WorkerContext) -> Maintenance:
        """The worker's maintenance thread, counting the runs it declares lost."""
        return _MeteredMaintenance(ctx, self)

    def after_job(self, job: Job, horse_pids: list[int]) -> None:
        """In the worker's main process after each job: a webhook delivery's outcome, and
        the metric files of finished work horses folded into this process's own."""
        if job.func_name == WEBHOOK_FUNCTION:
            with contextlib.suppress(redis.RedisError):
                outcome = _DELIVERY_OUTCOMES.get(str(job.get_status(refresh=True)))
                if outcome is not None:
                    self.webhook_deliveries.labels(outcome=outcome).inc()
        self.absorb_horses(horse_pids)

    def absorb_horses(self, horse_pids: list[int]) -> None:
        """The metric files of work horses that have ended, folded into this process's."""
        if self.directory is not None:
            for pid in horse_pids:
                absorb_dead_process(self.directory, pid, into_pid=os.getpid())
        horse_pids.clear()


class _MeteredMaintenance(Maintenance):
    def __init__(self, ctx: WorkerContext, metrics: WorkerMetrics) -> None:
        super().__init__(ctx)
        self._metrics = metrics

    def run_once(self) -> int:
        lost = super().run_once()
        if lost:
            self._metrics.run_ended_elsewhere(RunStatus.LOST, lost)
        return lost


class RunMeter:
    """What one run adds to the worker's metrics; called by its publisher and runner."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        *,
        profile: str,
        model: str,
        submitted_at: float,
        clock: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._profile = profile
        self._model = model
        self._submitted_at = submitted_at
        self._clock = clock
        self._cancel_heard: float | None = None
        self._buffered = 0

    def added(self, event: Event) -> None:
        """An event was queued for publishing: what it tells about the run."""
        data = event.data
        metrics = self._metrics
        if isinstance(data, StartedData):
            metrics.runs_started.inc()
            dispatch_s = self._clock() - self._submitted_at
            if 0 <= dispatch_s < math.inf:  # a negative value is clock skew, not a wait
                metrics.dispatch.observe(dispatch_s)
        elif isinstance(data, InitData) and data.model:
            self._model = label_value(data.model)
        elif isinstance(data, ResultData):
            self._result(data)
        elif isinstance(data, ErrorData):
            metrics.errors.labels(code=_known(str(data.code), _ERROR_CODES)).inc()
        elif isinstance(data, FinishedData):
            metrics.runs_finished.labels(status=_known(str(data.status), _STATUSES)).inc()
            if math.isfinite(data.duration_s) and data.duration_s >= 0:
                metrics.run_duration.observe(data.duration_s)
            if self._cancel_heard is not None:
                metrics.cancel.observe(max(0.0, time.monotonic() - self._cancel_heard))

    def written(self, types: Sequence[str]) -> None:
        """These events reached the session log."""
        # One increment per type in the batch, not per event (a burst is one or two
        # types): labels() and a multiprocess value write cost ~1.5 us each.
        counter = self._metrics.events_published
        for event_type, count in Tally(types).items():
            counter.labels(type=_known(event_type, _EVENT_TYPES)).inc(count)

    def buffered(self, total_bytes: int) -> None:
        """The run's publisher now holds this many unwritten bytes."""
        self._metrics.publish_buffer.inc(total_bytes - self._buffered)
        self._buffered = total_bytes

    def cancel_heard(self) -> None:
        """The run's owner heard a cancel (its first one counts)."""
        if self._cancel_heard is None:
            self._cancel_heard = time.monotonic()

    def close(self) -> None:
        """The run is over: whatever it still held no longer counts as buffered."""
        self.buffered(0)

    def _result(self, data: ResultData) -> None:
        cost = data.total_cost_usd
        if cost is not None and math.isfinite(cost) and 0 <= cost <= _MAX_COST_USD:
            self._metrics.cost.labels(model=self._model, profile=self._profile).inc(cost)
        usage: dict[str, Any] = data.usage or {}
        for field, kind in TOKEN_KINDS.items():
            count = usage.get(field)
            if isinstance(count, int) and not isinstance(count, bool) and 0 < count <= _MAX_TOKENS:
                self._metrics.tokens.labels(model=self._model, kind=kind).inc(count)


def _known(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


class QueueCollector(Collector):
    """The queue's families, read from Redis at each scrape (a bounded wait for it)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis = sync_redis(settings, timeout_s=SCRAPE_REDIS_TIMEOUT_S)

    def collect(self) -> Iterable[Metric]:
        from producer.status import read_status

        settings = self._settings
        try:
            status = read_status(self._redis, settings, keys_from(settings))
        except (redis.RedisError, OSError):
            return queue_families(queue=settings.queue_name, redis_up=False)
        by_state: dict[str, int] = {}
        for worker in status.workers:
            by_state[str(worker.state)] = by_state.get(str(worker.state), 0) + 1
        return queue_families(
            queue=settings.queue_name,
            redis_up=True,
            queued=status.queued,
            workers_by_state=by_state,
            running=len(status.running),
        )


def serve_metrics(settings: Settings, *, host: str, port: int, directory: str) -> MetricsServer:
    """Serve /metrics on host:port from a thread: every process's files in `directory`
    merged, and the queue's families. Raises OSError if the port cannot be bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(multiprocess_collector(directory))
    registry.register(QueueCollector(settings))
    server, _thread = start_http_server(port, host, registry)
    return MetricsServer(server)


class MetricsServer:
    """A running /metrics endpoint."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_with_metrics(
    settings: Settings,
    *,
    directory: str,
    serve_on: tuple[str, int] | None,
    processes: int,
    burst: bool,
    name: str | None,
    mode: WorkerMode,
) -> int:
    """`claude-queue worker` with metrics written into `directory` (chosen before this
    module was imported: shared.metrics.metrics_directory). With `serve_on` (host,
    port) /metrics is served from this process; without, a pool serves it."""
    from worker.entry import run_worker
    from worker.pool import run_pool

    if serve_on is None:
        metrics = build_metrics(settings, directory)
        return run_worker(settings, name=name, burst=burst, mode=mode, metrics=metrics)
    configure_logging(settings)
    host, port = serve_on
    try:
        server = serve_metrics(settings, host=host, port=port, directory=directory)
    except OSError as exc:
        log.error("metrics_port_unavailable", host=host, port=port, error=str(exc))
        return ExitCode.USAGE
    log.info("metrics_serving", host=host, port=server.port, path="/metrics")
    try:
        if processes > 1:
            return run_pool(
                settings,
                processes=processes,
                burst=burst,
                name=name,
                mode=mode,
                metrics_dir=directory,
            )
        metrics = build_metrics(settings, directory)
        return run_worker(settings, name=name, burst=burst, mode=mode, metrics=metrics)
    finally:
        server.close()
