"""Validate a job and prepare its enqueue: everything submit does before I/O. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producer.errors import InvalidJobError
from shared.events import Event, EventType, QueuedData, encode_body
from shared.jobs import PromptJob, RunRequest, describe_validation_error, new_run_id
from shared.keys import Keys
from shared.settings import Settings
from shared.store import log_write_args

# RQ's own limit sits past ours, so the worker's timeout always acts first.
_RQ_TIMEOUT_MARGIN_S = 120
_RESULT_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Submission:
    request: RunRequest
    script_keys: list[str]
    script_args: list[str | int | float]
    rq_timeout_s: int
    result_ttl_s: int

    @property
    def payload(self) -> dict[str, Any]:
        return self.request.model_dump(mode="json")


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
    return validated


def prepare(settings: Settings, keys: Keys, job: PromptJob) -> Submission:
    """Run id, the queued event and the arguments of the submit script."""
    now = time.time()
    request = RunRequest(run_id=new_run_id(), submitted_at=now, job=job)
    session_id, run_id = job.session_id, request.run_id
    queued = Event(
        type=EventType.QUEUED,
        data=QueuedData(
            profile=job.profile or settings.default_profile,
            model=job.model,
            metadata=job.metadata,
        ),
    )
    return Submission(
        request=request,
        script_keys=[
            keys.run(session_id, run_id),
            keys.pending(session_id),
            keys.seq(session_id),
            keys.log(session_id),
            keys.sessions,
        ],
        script_args=[
            *log_write_args(keys, settings, session_id, run_id, now),
            encode_body(session_id, run_id, now, queued),
        ],
        rq_timeout_s=int(job.timeout_s or settings.default_timeout_s) + _RQ_TIMEOUT_MARGIN_S,
        result_ttl_s=_RESULT_TTL_S,
    )
