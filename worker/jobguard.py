"""Only the project's job functions run on a worker.

Anyone who can write RQ's keys (every producer must) can enqueue a call to any
importable function, and RQ would import and call it as the worker's user. The
worker therefore judges each job by what is stored in Redis, before anything is
imported or forked: the function must be exactly `shared.jobs.JOB_FUNCTION` (a run)
or `shared.jobs.WEBHOOK_FUNCTION` (a run's webhook delivery, whose payload and
target that function checks itself), called as a plain function (no instance), with
no callbacks (RQ imports and calls those too) and no RQ webhooks (RQ would POST to
any URL the job names, unchecked).

- `stored_call` reads those fields from a fetched job. With the JSON serializer
  this only parses JSON: nothing is imported.
- `refusal_reason` is the pure judgement.
- `refuse` puts a refused job in the failed registry with the reason.
- `GuardedJob` is the job class workers use, so that no other RQ path (the horse,
  registry cleanup, stopped jobs) can import a function or callback either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.utils import import_job_class, now

from shared.jobs import JOB_FUNCTION, WEBHOOK_FUNCTION

_SHOWN_CHARS = 200  # a refused name is attacker-chosen: never log or store it whole
_CALLBACK_KINDS = ("success", "failure", "stopped")
# Every function a job may call, by import path.
ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION, WEBHOOK_FUNCTION})


class JobRefused(Exception):
    """A job that is not a call of the project's job function."""


@dataclass(frozen=True, slots=True)
class StoredCall:
    """What a job asks the worker to call, as stored in Redis."""

    decodable: bool
    func_name: object = None
    instance: object = None
    callbacks: tuple[tuple[str, str], ...] = ()
    webhooks: int = 0


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…"


def refusal_reason(call: StoredCall) -> str | None:
    """Why this job must not run, or None when it is a plain call of an allowed function."""
    problem = _problem(call)
    if problem is None:
        return None
    return (
        f"job refused: {problem}; only {JOB_FUNCTION} may run on a claude-queue worker "
        f"(and {WEBHOOK_FUNCTION}, its runs' webhooks)"
    )


def _problem(call: StoredCall) -> str | None:
    if not call.decodable:
        return "its function and arguments cannot be decoded"
    if call.instance is not None:
        owner = type(call.instance).__name__
        return f"function {_shown(call.func_name)} is called on an instance ({owner})"
    if not isinstance(call.func_name, str) or call.func_name not in ALLOWED_FUNCTIONS:
        return f"function {_shown(call.func_name)} is not allowed"
    if call.callbacks:
        kind, name = call.callbacks[0]
        return f"function {call.func_name} carries a {kind} callback {_shown(name)}"
    if call.webhooks:
        return f"function {call.func_name} carries {call.webhooks} webhook(s)"
    return None


def stored_call(job: Job) -> StoredCall:
    """The call a fetched job describes, read without importing anything."""
    callbacks = tuple(
        (kind, str(name))
        for kind in _CALLBACK_KINDS
        if (name := getattr(job, f"_{kind}_callback_name", None))
    )
    try:
        # Decodes the job's data (JSON under our serializer); imports nothing.
        func_name, instance = job.func_name, job.instance
    except DeserializationError:
        return StoredCall(decodable=False, callbacks=callbacks)
    return StoredCall(
        decodable=True,
        func_name=func_name,
        instance=instance,
        callbacks=callbacks,
        webhooks=len(job.webhooks),
    )


def shown_function(call: StoredCall) -> str:
    """The job's function name, shortened, for logs."""
    return _shown(call.func_name) if call.decodable else "<undecodable>"


def refuse(connection: redis.Redis, job: Job, queue: Queue, reason: str) -> None:
    """Fail a refused job without running anything: out of the queue, into the failed registry."""
    job.ended_at = now()
    # The job came off this queue; its stored origin is as untrusted as the rest.
    job.origin = queue.name
    with connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        # RQ's failure path without a worker: no callback, no webhook, no retry.
        record_job_failure(job, f"{JobRefused.__name__}: {reason}", pipe)
        pipe.execute()


class GuardedJob(Job):
    """An RQ job that resolves only ALLOWED_FUNCTIONS and never runs callbacks or webhooks."""

    @property
    def func(self) -> Any:
        reason = refusal_reason(stored_call(self))
        if reason is not None:
            raise JobRefused(reason)
        return super().func

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        del status, exc_string  # never contact a URL a job names


def guarded_job_class(given: object) -> type[GuardedJob]:
    """The job class a worker uses: GuardedJob (or a subclass), whatever it was given."""
    if isinstance(given, str):
        given = import_job_class(given)
    if isinstance(given, type) and issubclass(given, GuardedJob):
        return given
    return GuardedJob
