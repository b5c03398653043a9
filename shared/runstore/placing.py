"""Submit's placement of a run behind its session's waiting runs (shared/scheduling.py):
what it reads, and the run it then writes. Pure; RunStore and AsyncRunStore do the I/O.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline
from rq import Queue

from shared import rqjobs
from shared.events import Event, QueuedData
from shared.jobs import JOB_FUNCTION, Priority
from shared.keys import Keys
from shared.runstore.model import NewRun
from shared.scheduling import (
    PRIORITY_FIELD,
    PRIORITY_META,
    SCHEDULED_FIELD,
    Ahead,
    Placement,
    as_epoch,
    as_priority,
    place,
    priority_queue_name,
)

RECORD_FIELDS = ("status", PRIORITY_FIELD, SCHEDULED_FIELD)


class PlacedQueuedData(QueuedData):
    """The `queued` payload of a run that is delayed, not of default priority, or a retry.

    A subclass, so readers that know only QueuedData keep working (they ignore the
    extra fields, which stay in the envelope's `data`).
    """

    priority: Priority = "default"
    # Epoch seconds: the run starts no earlier (None: as soon as its turn comes).
    scheduled_for: float | None = None
    limit_key: str | None = None
    # The run this one submits again (retry_lost / retry_on).
    retry_of: str | None = None
    attempt: int = 0


def ahead(records: list[list[Any]]) -> list[Ahead]:
    """The session's runs still waiting to be taken, from HMGETs of RECORD_FIELDS."""
    found = []
    for status, priority, scheduled in records:
        text = status.decode(errors="replace") if isinstance(status, bytes) else status
        if text != "queued":
            continue
        found.append(Ahead(as_priority(priority) or "default", as_epoch(scheduled)))
    return found


def placement(run: NewRun, records: list[list[Any]], *, now: float) -> Placement:
    """Where `run` waits, given the records of the runs pending in its session."""
    job = run.request.job
    return place(job.priority, job.start_at(run.request.submitted_at), ahead(records), now=now)


def list_name(queue_name: str, where: Placement) -> str:
    return priority_queue_name(queue_name, where.priority)


def placed(run: NewRun, where: Placement) -> NewRun:
    """The run as placed: its request knows when it may start, its `queued` says so."""
    request, job = run.request, run.request.job
    plain = (
        where.priority == "default"
        and where.enqueue_at is None
        and job.priority == "default"
        and job.limit_key is None
        and request.retry_of is None
    )
    if plain:
        return run
    data = run.queued.data
    assert isinstance(data, QueuedData)
    queued = Event(
        type=run.queued.type,
        data=PlacedQueuedData(
            **data.model_dump(),
            priority=where.priority,
            scheduled_for=where.enqueue_at,
            limit_key=job.limit_key,
            retry_of=request.retry_of,
            attempt=request.attempt,
        ),
    )
    new_request = request.model_copy(update={"scheduled_for": where.enqueue_at})
    return dataclasses.replace(run, request=new_request, queued=queued)


def record_writes(keys: Keys, run: NewRun, where: Placement) -> tuple[str, dict[str, str]]:
    """The run record fields later submits read back (after SUBMIT_LUA made the record)."""
    fields: dict[str, str] = {PRIORITY_FIELD: where.priority}
    if where.enqueue_at is not None:
        fields[SCHEDULED_FIELD] = str(where.enqueue_at)
    return keys.run(run.session_id, run.run_id), fields


def record_key(keys: Keys, session_id: str, member: object) -> str:
    """The record key of a pending-list member as read (bytes or str)."""
    run_id = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
    return keys.run(session_id, run_id)


def enqueue(queue: Queue, run: NewRun, pipe: Pipeline, where: Placement) -> None:
    """Queue RQ's enqueue of the run on `pipe` (leaving it in MULTI); a run placed for
    later waits in RQ's scheduled registry, which RQ's scheduler empties when due, into
    the list its meta names (worker/scheduler.py)."""
    if where.enqueue_at is None:
        enqueue_job(queue, run, pipe)
        return
    job = queue.create_job(JOB_FUNCTION, **_job_fields(run), meta={PRIORITY_META: where.priority})
    if not pipe.explicit_transaction:
        pipe.multi()
    queue.schedule_job(job, datetime.fromtimestamp(where.enqueue_at, UTC), pipeline=pipe)


def routed_worker(owner: object) -> str | None:
    """The worker a run goes to, from its session's warm owner key as read (bytes, str or
    None): a worker name that may name an own queue, else None (the shared queue)."""
    name = owner.decode(errors="replace") if isinstance(owner, bytes) else owner
    return name if rqjobs.is_worker_name(name) else None


def enqueue_job(queue: Queue, run: NewRun, pipe: Pipeline) -> None:
    """Queue RQ's enqueue of the run's job on `pipe` (it leaves the pipeline in MULTI)."""
    queue.enqueue_call(JOB_FUNCTION, **_job_fields(run), pipeline=pipe)


def _job_fields(run: NewRun) -> dict[str, Any]:
    """The RQ job of a run, as enqueued now or scheduled for later alike."""
    return {
        "args": (run.payload,),
        "job_id": run.run_id,
        "timeout": run.rq_timeout_s,
        "result_ttl": run.result_ttl_s,
        "description": f"claude-queue run for session {run.session_id}",
    }


def version_tuple(version: object) -> tuple[int, int, int]:
    """A Redis server version (INFO's redis_version) as RQ keeps it: (major, minor, patch)."""
    parts = [int(p) for p in str(version).split(".")[:3]]
    return (*parts, 0, 0, 0)[:3]  # type: ignore[return-value]
