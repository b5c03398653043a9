"""Opt-in retries: a run declared lost (`retry_lost`) or failed with an API error its job
names (`retry_on`) is submitted again, as a new run of the same session.

Off unless the job asks, because agent runs have side effects: a retried run may do
again what the first one already did. The new run is an ordinary submit of the same
job (so it resumes the session's conversation, as the first one would have), placed
after the session's waiting runs and held back by a capped, jittered backoff
(shared/backoff.py) in RQ's scheduled registry. Its `queued` names the run it retries
(`retry_of`) and its `attempt`; the ended run keeps its own `finished`.

At most once per ended run: the `retried` marker (SET NX, in the session's key space)
is taken before the new run is submitted, so two reapers that both saw a run end, or
a delivery run twice, submit one retry. A process that dies (or loses Redis) between
the marker and the submit leaves the run without its retry; never with two.
"""

from __future__ import annotations

from typing import Literal

import structlog
from pydantic import ValidationError
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.submission import prepare
from shared.backoff import SYSTEM_RANDOM, Backoff, RandomSource
from shared.events import ErrorData, Event, RunStatus
from shared.jobs import PromptJob, RetryableError, RunRequest
from shared.runstore import RunStore
from shared.settings import Settings

log = structlog.get_logger(__name__)

RetryCause = Literal["lost", "overloaded", "rate_limited"]

# HTTP statuses of the API errors retry_on names (the CLI reports them as api_error_status).
_API_ERRORS: dict[int, RetryableError] = {529: "overloaded", 429: "rate_limited"}


def api_error_of(event: Event) -> RetryableError | None:
    """The retryable API error an `error` event reports, if it reports one."""
    data = event.data
    if not isinstance(data, ErrorData):
        return None
    status = data.detail.get("api_error_status")
    # bool is an int: a stray `true` must not read as a status.
    if isinstance(status, int) and not isinstance(status, bool):
        return _API_ERRORS.get(status)
    return None


def retries_left(request: RunRequest, cause: RetryCause, settings: Settings) -> bool:
    """Does the job ask for (another) retry after `cause`?

    `attempt` counts every retry of the first run, whatever its cause.
    """
    job = request.job
    if cause == "lost":
        limit = job.retry_lost
    elif cause in job.retry_on:
        limit = settings.retry_on_max
    else:
        return False
    return request.attempt < limit


def retry_backoff(settings: Settings) -> Backoff:
    """Waits before retries: doubling from retry_first_s up to retry_max_s, full jitter."""
    return Backoff(first_s=settings.retry_first_s, max_s=settings.retry_max_s)


def retry_job(request: RunRequest, settings: Settings, rand: RandomSource) -> PromptJob:
    """The job of the retry: the same job, due after the backoff of its attempt."""
    delay_s = retry_backoff(settings).next_delay(request.attempt, rand)
    return request.job.model_copy(update={"run_at": None, "delay_s": delay_s})


def resubmit(
    store: RunStore,
    request: RunRequest,
    cause: RetryCause,
    *,
    rand: RandomSource = SYSTEM_RANDOM,
) -> str | None:
    """Submit `request` again after `cause` if its job asks; the new run id, or None."""
    settings = store.settings
    if not retries_left(request, cause, settings):
        return None
    session_id = request.job.session_id
    run = prepare(
        settings,
        retry_job(request, settings, rand),
        retry_of=request.run_id,
        attempt=request.attempt + 1,
    )
    marker = store.keys.retried(session_id, request.run_id)
    if not store.redis.set(marker, run.run_id, nx=True, ex=settings.event_log_ttl_s):
        return None  # another process retried it already
    store.submit(run)
    log.warning(
        "run_retried",
        session_id=session_id,
        retry_of=request.run_id,
        run_id=run.run_id,
        attempt=run.request.attempt,
        cause=cause,
        scheduled_for=run.request.job.delay_s,
    )
    return run.run_id


def stored_request(store: RunStore, session_id: str, run_id: str) -> RunRequest | None:
    """The request of a run, from its RQ job (kept past its end); None if gone or invalid."""
    try:
        job = Job.fetch(run_id, connection=store.redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    payload = job.args[0] if job.args else None
    try:
        request = RunRequest.model_validate(payload)
    except ValidationError:
        log.warning("retry_skipped_invalid_payload", session_id=session_id, run_id=run_id)
        return None
    if request.run_id != run_id or request.job.session_id != session_id:
        log.warning("retry_skipped_foreign_payload", session_id=session_id, run_id=run_id)
        return None
    return request


def retry_lost(store: RunStore, session_id: str, run_id: str) -> str | None:
    """After a run was declared lost: its retry's run id, if its job asked for one."""
    request = stored_request(store, session_id, run_id)
    if request is None or request.job.retry_lost == 0:
        return None
    return resubmit(store, request, "lost")


def retry_failed(
    store: RunStore, request: RunRequest, status: RunStatus, api_error: RetryableError | None
) -> str | None:
    """After a run failed: its retry's run id, if it failed with an error retry_on names."""
    if status is not RunStatus.FAILED or api_error is None:
        return None
    return resubmit(store, request, api_error)
