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
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.utils import now, utcformat

# How long a canceled job and its registry entry are kept: as long as producers
# keep a finished job's result (producer/submission.py).
CANCELED_TTL_S = 24 * 3600


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
