"""Validate a job and prepare its run: everything submit does before I/O. Pure."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from producer.errors import InvalidJobError
from shared.events import Event, EventType, QueuedData
from shared.jobs import PromptJob, RunRequest, describe_validation_error, new_run_id
from shared.runstore import NewRun
from shared.settings import Settings
from shared.webhooks import submit_refusal

# RQ's own limit sits past ours, so the worker's timeout always acts first.
_RQ_TIMEOUT_MARGIN_S = 120
_RESULT_TTL_S = 24 * 3600
# The queued event's prompt preview by default (CLAUDE_QUEUE_PROMPT_PREVIEW_CHARS).
QUEUED_PROMPT_PREVIEW_CHARS = 2000


def prompt_preview(prompt: str, limit: int = QUEUED_PROMPT_PREVIEW_CHARS) -> str | None:
    """The prompt as the queued event shows it: its beginning, and how much was cut;
    None with a limit of 0 (the job keeps the whole prompt either way)."""
    if limit == 0:
        return None
    if len(prompt) <= limit:
        return prompt
    return f"{prompt[:limit]}…[truncated {len(prompt) - limit} chars]"


def validate_job(settings: Settings, job: PromptJob | None, fields: dict[str, Any]) -> PromptJob:
    """A PromptJob from either a model or keyword fields; InvalidJobError names bad fields."""
    if job is not None and fields:
        raise InvalidJobError("pass either a PromptJob or keyword fields, not both")
    try:
        validated = job if job is not None else PromptJob.model_validate(fields)
    except ValidationError as exc:
        raise InvalidJobError(f"invalid job: {describe_validation_error(exc)}") from None
    if validated.profile is not None and validated.profile not in settings.profiles:
        raise InvalidJobError(
            f"invalid job: profile: unknown permission profile {validated.profile!r} "
            f"(known: {', '.join(sorted(settings.profiles))})"
        )
    if validated.webhook is not None:
        # Literal private or loopback targets now; names are checked again where delivered.
        problem = submit_refusal(validated.webhook, allow_private=settings.webhook_allow_private)
        if problem is not None:
            raise InvalidJobError(f"invalid job: webhook: {problem}")
    return validated


def prepare(
    settings: Settings, job: PromptJob, *, retry_of: str | None = None, attempt: int = 0
) -> NewRun:
    """A new run id, the run's `queued` event and RQ's limits for it.

    `retry_of` and `attempt` name the run this one submits again (worker/retries.py).
    """
    request = RunRequest(
        run_id=new_run_id(),
        submitted_at=time.time(),
        job=job,
        retry_of=retry_of,
        attempt=attempt,
    )
    queued = Event(
        type=EventType.QUEUED,
        data=QueuedData(
            profile=job.profile or settings.default_profile,
            model=job.model,
            metadata=job.metadata,
            prompt=prompt_preview(job.prompt, settings.prompt_preview_chars),
        ),
    )
    return NewRun(
        request=request,
        queued=queued,
        rq_timeout_s=int(job.timeout_s or settings.default_timeout_s) + _RQ_TIMEOUT_MARGIN_S,
        result_ttl_s=_RESULT_TTL_S,
    )
