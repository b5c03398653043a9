"""RQ's record of a run's job, kept in step with how the run ended.

RQ 3 keeps a job's state twice: the `status` field of its hash and the registry
of that state. RQ itself writes both for finished and failed jobs; these helpers
write them for the one state RQ's worker never reaches on its own, `canceled`,
without fetching (so without deserializing) the job:

- `canceled_writes`: status, expiry and canceled-registry entry, on a caller's
  pipeline (the RunStore's cancel of a queued run, a work horse's interrupted run).
- `mark_canceled` (workers): a started job whose run ended `interrupted` after its
  work horse died, wherever RQ left it.
- `prune_canceled`: RQ never trims its canceled registry; drop entries whose job
  has expired.

Workers' own queues (warm routing): every claude-queue worker also listens, first,
on a queue of its own, `<queue>:worker:<worker name>`. A run of a session whose CLI
a worker holds warm and idle is pushed there (`RoutedQueue`); its job still belongs
to the shared queue (`origin`), so every registry RQ keeps for it is the shared
queue's and moving it back (`move_queued`) is a list operation only. Own queues are
registered in RQ's set of queues, so `rq info` shows them and the reaper finds the
ones of workers that died (`worker_queues`, `forget_worker_queue`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any, TypeGuard, cast

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from shared.scheduling import served_queue_names

# How long a canceled job and its registry entry are kept: as long as producers
# keep a finished job's result (producer/submission.py).
CANCELED_TTL_S = 24 * 3600

# A worker's own queue is `<queue>:worker:<name>`. Names that reach a queue name come
# from Redis (warm advertisements) or from whoever started the worker: no `:` (the
# separator), no `,` (RQ joins a worker's queue names with it), nothing a glob or an
# ACL rule reads specially.
WORKER_QUEUE_MARK = ":worker:"
_WORKER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def queue_key(queue_name: str) -> str:
    """The Redis list RQ queues job ids in."""
    return f"{Queue.redis_queue_namespace_prefix}{queue_name}"


def job_key(job_id: str) -> str:
    """The Redis hash of one RQ job."""
    return f"{Job.redis_job_namespace_prefix}{job_id}"


def canceled_registry_key(queue_name: str) -> str:
    """The sorted set `rq info` and rq-dashboard read canceled jobs from."""
    return CanceledJobRegistry(queue_name).key


def _expiry_score(ttl_s: int) -> float | str:
    # Registries score an entry by when it expires; -1 keeps it, as RQ does.
    return "+inf" if ttl_s < 0 else time.time() + ttl_s


def canceled_writes(pipe: Any, queue_name: str, job_id: str, *, ttl_s: int) -> None:
    """Queue on `pipe` the writes that make a job canceled: status, expiry, registry."""
    pipe.hset(
        job_key(job_id), mapping={"status": JobStatus.CANCELED.value, "ended_at": utcformat(now())}
    )
    if ttl_s >= 0:
        pipe.expire(job_key(job_id), ttl_s)
    pipe.zadd(canceled_registry_key(queue_name), {job_id: _expiry_score(ttl_s)})


def mark_canceled(
    client: redis.Redis, queue_name: str, job_id: str, *, ttl_s: int = CANCELED_TTL_S
) -> bool:
    """Move a job from wherever RQ left it into the canceled registry; False if it is gone."""
    if not client.exists(job_key(job_id)):
        return False
    started_key = StartedJobRegistry(queue_name).key
    # Started entries are `<job id>:<execution id>`; a horse that died leaves its own.
    stale = [
        member
        for member in cast(list[bytes], client.zrange(started_key, 0, -1))
        if member.decode(errors="replace").split(":", 1)[0] == job_id
    ]
    with client.pipeline() as pipe:
        if stale:
            pipe.zrem(started_key, *stale)
        pipe.zrem(FailedJobRegistry(queue_name).key, job_id)
        pipe.zrem(FinishedJobRegistry(queue_name).key, job_id)
        pipe.lrem(queue_key(queue_name), 0, job_id)
        canceled_writes(pipe, queue_name, job_id, ttl_s=ttl_s)
        pipe.execute()
    return True


def prune_canceled(client: redis.Redis, queue_names: Iterable[str], *, batch: int = 1000) -> int:
    """Drop canceled-registry entries whose job hash has expired; returns how many went."""
    removed = 0
    for queue_name in queue_names:
        key = canceled_registry_key(queue_name)
        due = cast(list[bytes], client.zrangebyscore(key, "-inf", time.time(), start=0, num=batch))
        if not due:
            continue
        with client.pipeline(transaction=False) as pipe:
            for member in due:
                pipe.exists(job_key(member.decode(errors="replace")))
            exists = pipe.execute()
        # A job canceled by RQ itself has no expiry: its entry stays, as RQ keeps it.
        gone = [member for member, alive in zip(due, exists, strict=True) if not alive]
        if gone:
            removed += int(client.zrem(key, *gone))
    return removed


# -- workers' own queues ------------------------------------------------------------


def is_worker_name(value: object) -> TypeGuard[str]:
    """True for a worker name that may name a worker's own queue."""
    return isinstance(value, str) and _WORKER_NAME.fullmatch(value) is not None


def worker_queue_name(queue_name: str, worker_name: str) -> str:
    """The queue only `worker_name` listens on, beside `queue_name` (ValueError if the
    name may not name one)."""
    if not is_worker_name(worker_name):
        raise ValueError(f"{worker_name!r} cannot name a worker's own queue")
    return f"{queue_name}{WORKER_QUEUE_MARK}{worker_name}"


def queue_worker(queue_name: str, candidate: str) -> str | None:
    """The worker whose own queue (of `queue_name`) `candidate` is, or None."""
    prefix = f"{queue_name}{WORKER_QUEUE_MARK}"
    if not candidate.startswith(prefix):
        return None
    worker_name = candidate[len(prefix) :]
    return worker_name if is_worker_name(worker_name) else None


class RoutedQueue(Queue):
    """The shared queue, except that its jobs are pushed onto one worker's own list.

    Everything RQ writes for the job is the shared queue's (`origin`, registries);
    only the list the id waits in differs.
    """

    def __init__(self, name: str, worker_name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.worker_name = worker_name
        self.routed_key = queue_key(worker_queue_name(name, worker_name))

    def push_job_id(
        self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False
    ) -> None:
        connection: Any = pipeline if pipeline is not None else self.connection
        connection.sadd(self.redis_queues_keys, self.routed_key)
        push = connection.lpush if at_front else connection.rpush
        push(self.routed_key, job_id)


class PriorityListQueue(Queue):
    """The shared queue, except that its jobs wait in one priority's list
    (shared/scheduling.py): `origin` and every registry stay the shared queue's."""

    def __init__(self, name: str, list_name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.list_key = queue_key(list_name)

    def push_job_id(
        self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False
    ) -> None:
        connection: Any = pipeline if pipeline is not None else self.connection
        connection.sadd(self.redis_queues_keys, self.list_key)
        push = connection.lpush if at_front else connection.rpush
        push(self.list_key, job_id)


class SubmitQueues:
    """The Queue objects submit enqueues through: the shared queue (or one priority's
    list of it), or routed to one worker's own list; built once per route (a bounded
    number of them)."""

    def __init__(self, queue_name: str, connection: redis.Redis, *, limit: int = 256) -> None:
        self.queue_name = queue_name
        self.connection = connection
        self.limit = limit
        # RQ reads the server version (INFO) before its first enqueue; a recording
        # connection cannot ask, so its owner tells (AsyncRunStore).
        self.server_version: tuple[int, int, int] | None = None
        self._queues: dict[str | None, Queue] = {}

    def get(self, worker_name: str | None, list_name: str | None = None) -> Queue:
        """The queue for jobs routed to `worker_name` (None: the shared queue, in the list
        `list_name` when it is not the shared queue's own)."""
        if worker_name is None and list_name is not None and list_name != self.queue_name:
            return self._listed(list_name)
        queue = self._queues.get(worker_name)
        if queue is None:
            if len(self._queues) >= self.limit:
                self._queues.clear()  # worker names come and go (host.pid): start over
            queue = self._queues[worker_name] = self._build(worker_name)
        if queue.redis_server_version is None and self.server_version is not None:
            queue.redis_server_version = self.server_version
        return queue

    def _listed(self, list_name: str) -> Queue:
        key = f"list:{list_name}"
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = PriorityListQueue(
                self.queue_name, list_name, connection=self.connection, serializer=JSONSerializer
            )
        if queue.redis_server_version is None and self.server_version is not None:
            queue.redis_server_version = self.server_version
        return queue

    def _build(self, worker_name: str | None) -> Queue:
        if worker_name is None:
            return Queue(self.queue_name, connection=self.connection, serializer=JSONSerializer)
        return RoutedQueue(
            self.queue_name, worker_name, connection=self.connection, serializer=JSONSerializer
        )


def move_queued(client: redis.Redis, from_queue: str, to_queue: str) -> list[str]:
    """Move every job id waiting in `from_queue` to the back of `to_queue`, in order.

    One LMOVE per job: a job is always in exactly one of the two lists. Jobs pushed
    meanwhile are moved too. Their `origin` is left alone: jobs in an own queue
    already belong to the shared one (RoutedQueue).
    """
    source, target = queue_key(from_queue), queue_key(to_queue)
    moved: list[str] = []
    while True:
        job_id = client.lmove(source, target, "LEFT", "RIGHT")
        if job_id is None:
            return moved
        moved.append(job_id.decode(errors="replace") if isinstance(job_id, bytes) else job_id)


def worker_queues(client: redis.Redis, queue_name: str) -> dict[str, str]:
    """The own queues of `queue_name` RQ knows of (its set of queues): worker -> queue."""
    found = {}
    for member in cast(set[bytes], client.smembers(Queue.redis_queues_keys)):
        name = member.decode(errors="replace").removeprefix(Queue.redis_queue_namespace_prefix)
        worker_name = queue_worker(queue_name, name)
        if worker_name is not None:
            found[worker_name] = name
    return found


def head_waiting(client: redis.Redis, queue_name: str, *, min_age_s: float) -> bool:
    """Has the same job headed this queue for at least `min_age_s` (as seen by repeated
    calls)? A queue whose worker takes its jobs never has: its head keeps changing.

    The head and when it was first seen (Redis's clock, so every host agrees) are kept
    in one key beside the queue.
    """
    head = client.lindex(queue_key(queue_name), 0)
    key = _head_seen_key(queue_name)
    if head is None:
        client.delete(key)
        return False
    head_id = head.decode(errors="replace") if isinstance(head, bytes) else str(head)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    seen = client.get(key)
    seen_text = seen.decode(errors="replace") if isinstance(seen, bytes) else str(seen or "")
    first_ms, _, seen_id = seen_text.partition(" ")
    if seen_id != head_id or not first_ms.isdigit():
        ttl_ms = max(60_000, int(min_age_s * 4000))
        client.set(key, f"{now_ms} {head_id}", px=ttl_ms)
        return False
    return now_ms - int(first_ms) >= min_age_s * 1000


def _head_seen_key(queue_name: str) -> str:
    return f"{queue_key(queue_name)}:head-seen"


def forget_worker_queue(client: redis.Redis, own_queue: str) -> bool:
    """Drop an own queue from RQ's set of queues if it is empty; True if it was dropped.

    Watched: a job pushed meanwhile keeps the queue registered.
    """
    key = queue_key(own_queue)
    with client.pipeline() as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            if pipe.llen(key):
                return False
            pipe.multi()
            pipe.srem(Queue.redis_queues_keys, key)
            pipe.delete(_head_seen_key(own_queue))
            pipe.execute()
            return True
        except redis.WatchError:
            return False


# -- priorities and delayed runs ------------------------------------------------------


def scheduled_registry_key(queue_name: str) -> str:
    """The sorted set RQ's scheduler enqueues delayed jobs from (scored by due second)."""
    return ScheduledJobRegistry(queue_name).key  # type: ignore[no-untyped-call]


def job_removals(queue_name: str, job_id: str) -> list[tuple[str, ...]]:
    """The commands that take a job out of every place it may wait before a worker takes
    it: the shared queue's priority lists and RQ's scheduled registry. The sum of their
    replies is how many places held it."""
    lists = [queue_key(name) for name in served_queue_names(queue_name)]
    removals: list[tuple[str, ...]] = [("LREM", key, "0", job_id) for key in lists]
    removals.append(("ZREM", scheduled_registry_key(queue_name), job_id))
    return removals


def waiting_lists(queue_name: str) -> list[str]:
    """The Redis lists jobs of `queue_name` wait in, by priority (own queues aside)."""
    return [queue_key(name) for name in served_queue_names(queue_name)]
