"""`status()`: queue depth, the queue's RQ workers (with the sessions each holds warm)
and the runs in progress, typed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, cast

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from shared.keys import Keys
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


@dataclass(frozen=True, slots=True)
class QueueStatus:
    queue: str
    queued: int  # jobs waiting in the RQ queue
    workers: list[WorkerInfo]
    running: dict[str, str] = field(default_factory=dict)  # run id -> session id

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "queued": self.queued,
            "workers": [worker.as_dict() for worker in self.workers],
            "running": dict(self.running),
        }


def worker_state(value: object) -> WorkerState | str:
    """RQ's state as our enum; an unknown one stays its string."""
    text = str(value)
    try:
        return WorkerState(text)
    except ValueError:
        return text


def _current_job(worker: BaseWorker) -> str | None:
    """The worker's current job id, or None when it cannot be read now.

    RQ's lookup also removes an execution that has just ended from the worker's
    set; a producer may only read that set (ACL role), and the race with the
    ending execution is harmless: the worker is then idle or on its next job.
    """
    try:
        return worker.get_current_job_id()
    except redis.exceptions.NoPermissionError:
        return None


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
    return QueueStatus(
        queue=settings.queue_name,
        queued=queue.count,
        workers=workers,
        running={run.decode(): session.decode() for run, session in raw_running.items()},
    )
