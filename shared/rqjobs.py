"""RQ's record of a run's job, kept in step with how the run ended.

RQ 3 keeps a job's state twice: the `status` field of its hash and the registry
of that state. RQ itself writes both for finished and failed jobs; these helpers
write them for the one state RQ's worker never reaches on its own, `canceled`,
without fetching (so without deserializing) the job:

- `cancel_queued_job` / `cancel_queued_job_async` (producers): a run cancelled
  while queued leaves the RQ queue, so no worker dequeues it. One Lua call: the job
  is marked canceled only if it was still in the queue (a worker that already took
  it skips the run, and RQ records that job as finished).
- `mark_canceled` (workers): a started job whose run ended `interrupted`.
- `canceled_writes`: the writes both share, for a caller's pipeline.
- `prune_canceled`: RQ never trims its canceled registry; drop entries whose job
  has expired.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

import redis
import redis.asyncio as aioredis
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

# KEYS: queue list, job hash, canceled registry
# ARGV: job id, ended_at (RQ's format), expiry score, ttl_s (-1: keep forever)
CANCEL_QUEUED_LUA = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', 'canceled', 'ended_at', ARGV[2])
if tonumber(ARGV[4]) >= 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""


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


def cancel_queued_keys(
    queue_name: str, job_id: str, ttl_s: int = CANCELED_TTL_S
) -> tuple[list[str], list[str | float | int]]:
    """KEYS and ARGV of CANCEL_QUEUED_LUA for one job."""
    return (
        [queue_key(queue_name), job_key(job_id), canceled_registry_key(queue_name)],
        [job_id, utcformat(now()), _expiry_score(ttl_s), ttl_s],
    )


def cancel_queued_job(
    client: redis.Redis, queue_name: str, job_id: str, *, ttl_s: int = CANCELED_TTL_S
) -> bool:
    """Take a queued job out of the RQ queue, marked canceled; False if it was not queued."""
    keys, args = cancel_queued_keys(queue_name, job_id, ttl_s)
    return bool(client.register_script(CANCEL_QUEUED_LUA)(keys=keys, args=args) == 1)


async def cancel_queued_job_async(
    client: aioredis.Redis, queue_name: str, job_id: str, *, ttl_s: int = CANCELED_TTL_S
) -> bool:
    """The asyncio twin of cancel_queued_job (the same script)."""
    keys, args = cancel_queued_keys(queue_name, job_id, ttl_s)
    return bool(await client.register_script(CANCEL_QUEUED_LUA)(keys=keys, args=args) == 1)


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
