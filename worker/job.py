"""The RQ entry point: validate the payload again, hand it to the runner, report the end.

Glue only. The worker context (settings, Redis, names) reaches the job through a
context variable that the worker binds around each job it performs.

RQ's record of the job tells how the run ended. Only once the run's `finished` is
published, a run that did not succeed raises: RunInterrupted (the worker records
the job canceled) or RunFailed (failed, with the run's reason as its exc_info).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import redis
import structlog
from pydantic import ValidationError

from shared.events import ErrorCode, EventType, RunStatus
from shared.jobs import SESSION_ID_PATTERN, RunRequest, describe_validation_error
from worker.context import WorkerContext
from worker.runner import claim_and_fail, execute_run
from worker.webhooks import after_run

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics

log = structlog.get_logger(__name__)

_context: ContextVar[WorkerContext | None] = ContextVar("claude_queue_worker", default=None)
# The worker process's metrics, when it serves them (claude-queue worker --metrics-port).
_metrics: ContextVar[WorkerMetrics | None] = ContextVar("claude_queue_metrics", default=None)
# A run's `finished` is its last event, so it sits among the newest few of its session.
_REASON_SEARCH_EVENTS = 64


class RunEnded(Exception):
    """A run that ended without succeeding; raised only after its `finished` is published."""

    def __init__(self, run_id: str, status: str, reason: str | None) -> None:
        self.run_id = run_id
        self.status = status
        self.reason = reason
        super().__init__(f"run {run_id} ended {status}: {reason or 'no reason given'}")

    def one_line(self) -> str:
        """What RQ stores as the job's exc_info: the run's end, not a traceback."""
        return f"{type(self).__module__}.{type(self).__qualname__}: {self}"


class RunFailed(RunEnded):
    """failed, timed_out, lost or any other unsuccessful status: a FAILED RQ job."""


class RunInterrupted(RunEnded):
    """Cancelled or interrupted: a CANCELED RQ job."""


@contextmanager
def bound_context(ctx: WorkerContext, metrics: WorkerMetrics | None = None) -> Iterator[None]:
    """Make `ctx` (and `metrics`) the context of jobs performed inside this block."""
    token = _context.set(ctx)
    metrics_token = _metrics.set(metrics)
    try:
        yield
    finally:
        _metrics.reset(metrics_token)
        _context.reset(token)


def run_prompt(payload: Any) -> str:
    """RQ job function: `succeeded` (or `skipped`: not ours to run); raises RunEnded otherwise."""
    ctx = _context.get()
    if ctx is None:
        raise RuntimeError("run_prompt runs only on a claude-queue worker (worker.rqworker)")
    try:
        request = RunRequest.model_validate(payload)
    except ValidationError as exc:
        _refuse(payload, describe_validation_error(exc), ctx)
    status = execute_run(request, ctx, _metrics.get())
    if status is None:
        return "skipped"
    after_run(ctx, request)  # its finished is published: enqueue its webhook, if any
    if status is RunStatus.SUCCEEDED:
        return status.value
    reason = _finished_reason(ctx, request.job.session_id, request.run_id)
    raise ended(request.run_id, status.value, reason)


def ended(run_id: str, status: str, reason: str | None) -> RunEnded:
    """The exception that reports an unsuccessful run's end to RQ."""
    if status == RunStatus.INTERRUPTED.value:
        return RunInterrupted(run_id, status, reason)
    return RunFailed(run_id, status, reason)


def _finished_reason(ctx: WorkerContext, session_id: str, run_id: str) -> str | None:
    """The `reason` of this run's `finished` event, read back from the session log."""
    try:
        last = ctx.store.last_seq(session_id) or 0
        newest = ctx.store.replay_page(session_id, after=max(0, last - _REASON_SEARCH_EVENTS))
    except redis.RedisError as exc:
        log.warning("finished_reason_unread", error=str(exc))
        return None
    for envelope in reversed(newest):
        if envelope.run_id == run_id and envelope.type is EventType.FINISHED:
            reason = envelope.data.get("reason")
            return reason if isinstance(reason, str) else None
    return None


def _refuse(payload: Any, problem: str, ctx: WorkerContext) -> NoReturn:
    """A payload that bypassed the producer's checks: fail its run visibly, keep working."""
    job = payload.get("job") if isinstance(payload, dict) else None
    session_id = job.get("session_id") if isinstance(job, dict) else None
    run_id = payload.get("run_id") if isinstance(payload, dict) else None
    message = f"invalid job payload: {problem}"
    log.error("invalid_job", problem=problem)
    if (
        isinstance(session_id, str)
        and re.fullmatch(SESSION_ID_PATTERN, session_id)
        and isinstance(run_id, str)
        and re.fullmatch(r"[0-9a-f]{32}", run_id)
    ):
        claim_and_fail(
            ctx,
            session_id=session_id,
            run_id=run_id,
            code=ErrorCode.INVALID_JOB,
            message=message,
            started=time.monotonic(),
        )
        raise RunFailed(run_id, RunStatus.FAILED.value, message)
    # Nowhere to publish: fail the RQ job so it shows in the failed registry.
    raise ValueError(message)
