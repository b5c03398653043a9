"""The RQ entry point: validate the payload again, then hand it to the runner.

Glue only. The worker context (settings, Redis, names) reaches the job through a
context variable that the worker binds around each job it performs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from pydantic import ValidationError

from shared.events import ErrorCode, RunStatus
from shared.jobs import SESSION_ID_PATTERN, RunRequest, describe_validation_error
from worker.context import WorkerContext
from worker.runner import claim_and_fail, execute_run

log = structlog.get_logger(__name__)

_context: ContextVar[WorkerContext | None] = ContextVar("claude_queue_worker", default=None)


@contextmanager
def bound_context(ctx: WorkerContext) -> Iterator[None]:
    """Make `ctx` the context of jobs performed inside this block."""
    token = _context.set(ctx)
    try:
        yield
    finally:
        _context.reset(token)


def run_prompt(payload: Any) -> str:
    """RQ job function. Returns the run's final status (or `skipped`)."""
    ctx = _context.get()
    if ctx is None:
        raise RuntimeError("run_prompt runs only inside `claude-queue worker`")
    try:
        request = RunRequest.model_validate(payload)
    except ValidationError as exc:
        return _refuse(payload, describe_validation_error(exc), ctx)
    status = execute_run(request, ctx)
    return status.value if status else "skipped"


def _refuse(payload: Any, problem: str, ctx: WorkerContext) -> str:
    """A payload that bypassed the producer's checks: fail its run visibly, keep working."""
    import re

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
        return RunStatus.FAILED.value
    # Nowhere to publish: fail the RQ job so it shows in the failed registry.
    raise ValueError(message)
