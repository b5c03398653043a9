"""`status()`: queue depth, the queue's RQ workers (with the sessions each holds warm),
the runs in progress with their start times, and the runs that failed in the last hour;
`read_position()`: where one queued run stands."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, cast

import redis
from rq import Queue, Worker
from rq.executions import Execution
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import as_text
from rq.worker import BaseWorker

from shared.keys import Keys
from shared.rqjobs import queue_key
from shared.runstore.replies import warm_sessions
from shared.settings import Settings


class WorkerState(StrEnum):
    """What RQ says a worker is doing (its own vocabulary)."""

    STARTED = "started"
    SUSPENDED = "suspended"
    BUSY = "busy"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One RQ worker listening on the queue."""

    name: str
    state: WorkerState | str  # a str only for a state a newer RQ reports
    current_job: str | None = None  # the run id it is working on
    hostname: str | None = None
    pid: int | None = None
    queues: tuple[str, ...] = ()
    # Sessions whose CLI it holds warm and idle: session id -> epoch seconds it expires.
    warm_sessions: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FAILED_WINDOW_S = 3600
# Failed jobs looked at, newest first, to count the last hour's (a bounded read).
_FAILED_SCAN = 1000


@dataclass(frozen=True, slots=True)
class QueueStatus:
    queue: str
    queued: int  # jobs waiting in the RQ queue
    workers: list[WorkerInfo]
    running: dict[str, str] = field(default_factory=dict)  # run id -> session id
    # run id -> epoch seconds it started (RQ's started_at of its job): with_activity
    started_at: dict[str, float] = field(default_factory=dict)
    # Runs RQ holds as failed that ended in the last hour (with_activity); None: not
    # read, or this Redis user may not read RQ's failed registry or jobs.
    failed_last_hour: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "queued": self.queued,
            "workers": [worker.as_dict() for worker in self.workers],
            "running": dict(self.running),
            "started_at": dict(self.started_at),
            "failed_last_hour": self.failed_last_hour,
        }


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where a queued run stands, for `submit --follow` while it waits."""

    position: int | None  # 1-based place in the shared queue; None: not in it
    queued: int  # jobs in the shared queue
    workers: int
    busy: int  # workers working on a job now
    ahead_in_session: int  # runs of the same session submitted before it and pending

    def describe(self) -> str:
        """`3rd in queue, 2 of 2 workers busy` (or why it is not in the queue)."""
        from producer.render_text import ordinal, plural

        if self.ahead_in_session:
            where = f"behind {plural(self.ahead_in_session, 'earlier run')} of its session"
        elif self.position is not None:
            where = f"{ordinal(self.position)} in queue"
        else:
            where = "being picked up"
        if self.workers == 0:
            return f"{where}, no worker is running"
        return f"{where}, {self.busy} of {plural(self.workers, 'worker')} busy"


def worker_state(value: object) -> WorkerState | str:
    """RQ's state as our enum; an unknown one stays its string."""
    text = str(value)
    try:
        return WorkerState(text)
    except ValueError:
        return text


def _current_job(worker: BaseWorker) -> str | None:
    """The job id of one of the worker's live executions, or None when it is idle.

    Read-only. RQ's own lookup (get_current_job_id) also removes an execution that has
    just ended from the worker's set; a producer may only read that set (ACL role), and
    Redis logs each refused write, which the ACL test found in CI when the race hit.
    """
    connection = worker.connection
    try:
        # A member that is not `job_id:execution_id` names no execution hash: skipped below.
        executions = [
            Execution.from_composite_key(as_text(member), connection=connection)
            for member in connection.smembers(worker.executions_key)
        ]
        with connection.pipeline(transaction=False) as pipe:
            for execution in executions:
                pipe.hgetall(execution.key)
            found = pipe.execute()
    except redis.exceptions.NoPermissionError:
        return None
    live = (e.job_id for e, data in zip(executions, found, strict=True) if data)
    return next(live, None)


def _warm_sessions(connection: redis.Redis, keys: Keys, worker_name: str) -> dict[str, float]:
    """The worker's advertised warm sessions; none when this role may not read them
    (an ACL user made before warm sessions existed: visibility only)."""
    try:
        raw = connection.hgetall(keys.worker_warm(worker_name))
    except redis.exceptions.NoPermissionError:
        return {}
    return warm_sessions(cast(dict[Any, Any], raw))


def read_status(connection: redis.Redis, settings: Settings, keys: Keys) -> QueueStatus:
    """Read the status through RQ's own API (RQ is synchronous: asyncio runs this in a thread)."""
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    workers = [
        WorkerInfo(
            name=worker.name,
            state=worker_state(worker.get_state()),
            current_job=_current_job(worker),
            hostname=worker.hostname,
            pid=worker.pid,
            queues=tuple(worker.queue_names()),
            warm_sessions=_warm_sessions(connection, keys, worker.name),
        )
        for worker in Worker.all(queue=queue)
    ]
    raw_running = cast(dict[bytes, bytes], connection.hgetall(keys.running))
    running = {run.decode(): session.decode() for run, session in raw_running.items()}
    return QueueStatus(
        queue=settings.queue_name, queued=queue.count, workers=workers, running=running
    )


def with_activity(connection: redis.Redis, settings: Settings, status: QueueStatus) -> QueueStatus:
    """`status` plus when each running run started and how many runs failed in the last
    hour, read from RQ's jobs and failed registry (`claude-queue status`).

    Kept apart from read_status: a producer ACL role made before these reads is refused
    them (and Redis logs each refusal), so only the command that shows them asks.
    """
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    return replace(
        status,
        started_at=_started_at(connection, list(status.running)),
        failed_last_hour=_failed_since(connection, queue, time.time() - FAILED_WINDOW_S),
    )


def _jobs(connection: redis.Redis, job_ids: list[str]) -> list[Job]:
    """The RQ jobs of these ids that still exist (read as data: never executed here)."""
    if not job_ids:
        return []
    found = Job.fetch_many(job_ids, connection=connection, serializer=JSONSerializer)
    return [job for job in found if job is not None]


def _started_at(connection: redis.Redis, run_ids: list[str]) -> dict[str, float]:
    """When each run's RQ job started; none when this role may not read jobs."""
    try:
        jobs = _jobs(connection, run_ids)
    except redis.exceptions.NoPermissionError:
        return {}
    return {job.id: job.started_at.timestamp() for job in jobs if job.started_at is not None}


def _failed_since(connection: redis.Redis, queue: Queue, since: float) -> int | None:
    """Failed jobs of the queue that ended after `since` (the newest _FAILED_SCAN only);
    None when this role may not read them."""
    registry = FailedJobRegistry(queue=queue)
    try:
        # Scored by expiry (end + failure TTL): the newest failures have the highest scores.
        newest = cast(list[bytes], connection.zrevrange(registry.key, 0, _FAILED_SCAN - 1))
        jobs = _jobs(connection, [member.decode(errors="replace") for member in newest])
    except redis.exceptions.NoPermissionError:
        return None
    return sum(1 for job in jobs if job.ended_at is not None and job.ended_at.timestamp() >= since)


def read_position(
    connection: redis.Redis, settings: Settings, keys: Keys, session_id: str, run_id: str
) -> QueuePosition:
    """Where `run_id` waits: its place in the shared queue, the workers, its session."""
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    pipe = connection.pipeline(transaction=False)
    pipe.llen(queue_key(settings.queue_name))
    pipe.lrange(keys.pending(session_id), 0, -1)
    length, pending = pipe.execute()
    try:
        index = cast(int | None, connection.lpos(queue_key(settings.queue_name), run_id))
    except redis.exceptions.NoPermissionError:  # LPOS not granted (ACL role before issue 17)
        index = None
    pending_ids = [member.decode(errors="replace") for member in cast(list[bytes], pending)]
    ahead = pending_ids.index(run_id) if run_id in pending_ids else 0
    states = [str(worker.get_state()) for worker in Worker.all(queue=queue)]
    return QueuePosition(
        position=None if index is None else int(index) + 1,
        queued=int(length),
        workers=len(states),
        busy=sum(1 for state in states if state == WorkerState.BUSY.value),
        ahead_in_session=ahead,
    )
