"""End runs whose owner is gone, and clean up after them.

- `reap_all`: a run whose session lease expired has no live owner: it is declared
  `lost` (error + finished{lost}); its RQ job is moved from the started registry
  to the failed one, so `rq info` shows no ghost; a job with retry_lost is submitted
  again (worker/retries.py).
- `finish_for_worker`: a worker's main process ends the run of a work horse that
  died under it (cold shutdown, crash) with `interrupted`.
- `kill_orphans`: at worker start, kill processes of runs that are no longer
  running (left behind by a worker that died on this host).
- `release_worker_queues`: jobs routed to a worker's own queue (warm routing) go
  to the shared queue when that worker is gone, or is not taking them; a gone
  worker's warm advertisements go too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
import structlog
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from shared.events import ErrorCode, ErrorData, Event, EventType, InterruptedData, RunStatus
from shared.ids import is_run_id, is_session_id
from shared.rqjobs import (
    forget_worker_queue,
    head_waiting,
    job_key,
    mark_canceled,
    move_queued,
    waiting_lists,
    worker_queues,
)
from shared.rqjobs import queue_key as rq_queue_key
from shared.runstore import Condition, OwnedBy, RunState, RunStore
from shared.runstore.replies import text
from shared.settings import Settings
from worker.proctree import is_alive, kill_run_tree, marked_runs
from worker.retries import retry_lost
from worker.webhooks import enqueue_for_run

log = structlog.get_logger(__name__)

LOST_WAITING_MESSAGE = (
    "the worker holding this run while it waited for its turn stopped (it probably "
    "died) before it could start it; the run is declared lost"
)
LOST_MESSAGE = (
    "the worker running this run stopped renewing its lease (it probably died); "
    "the run is declared lost"
)


def reap_if_lost(store: RunStore, session_id: str, run_id: str, *, waiting: bool = False) -> bool:
    """Declare the run lost if its worker is gone; True if we did.

    A running run is lost when its lease expired; a queued run a worker held while
    waiting for its turn (`waiting=True`) is lost when that worker's wait marker did.
    The ids come from Redis (running/waiting hashes, pending lists): bad ones are skipped.
    """
    if not _valid_ids(session_id, run_id, source="reap"):
        return False
    message = LOST_WAITING_MESSAGE if waiting else LOST_MESSAGE
    lost = store.force_finish(
        session_id,
        run_id,
        status=RunStatus.LOST,
        condition=Condition.WAIT_GONE if waiting else Condition.LEASE_GONE,
        closing=Event(type=EventType.ERROR, data=ErrorData(code=ErrorCode.LOST, message=message)),
        reason=message,
    )
    if lost:
        log.warning("run_lost", session_id=session_id, run_id=run_id)
        fail_rq_job(store.redis, store.settings, run_id, message)
        enqueue_for_run(store.redis, store.settings, run_id)  # its webhook, if any
        retry_lost(store, session_id, run_id)  # submitted again, if its job asks (retry_lost)
    return lost


def finish_for_worker(store: RunStore, *, worker_name: str, run_id: str) -> bool:
    """End our own run after its work horse died; True if it was still open."""
    session_id = store.running_session(run_id)
    if session_id is None or not _valid_ids(session_id, run_id, source="running"):
        return False
    reason = "the worker stopped while the run was in progress"
    return store.force_finish(
        session_id,
        run_id,
        status=RunStatus.INTERRUPTED,
        condition=OwnedBy(worker_name),
        closing=Event(type=EventType.INTERRUPTED, data=InterruptedData(reason=reason)),
        reason=reason,
    )


def reap_all(store: RunStore) -> int:
    """Check every running and every waiting run once; returns how many were lost."""
    lost = 0
    for held in store.held_runs():
        lost += reap_if_lost(store, held.session_id, held.run_id, waiting=held.waiting)
    _requeue_stranded(store.redis, store.settings)
    requeue_vanished(store)
    return lost + _reap_undelivered(store)


def requeue_vanished(store: RunStore, *, limit: int = 100) -> list[str]:
    """Put back jobs a worker took off a queue and died with before starting them.

    A worker that listens on several queues (its own and the shared one) pops its next
    job without RQ's holding list, so a worker killed right then takes the job with it.
    A run that stays unclaimed while its job is in no queue, no holding list and no
    started registry, and is not held by a waiting worker, at two sightings a lease
    apart, was lost that way: its job goes back to the front of the shared queue.
    """
    client, settings = store.redis, store.settings
    queue = Queue(settings.queue_name, connection=client, serializer=JSONSerializer)
    lists = [*waiting_lists(queue.name)]  # the shared queue's, high to low priority
    lists.extend(rq_queue_key(q) for q in worker_queues(client, queue.name).values())
    lists.append(IntermediateQueue(queue.key, client).key)
    started = set(queue.started_job_registry.get_job_ids(cleanup=False))
    # Delayed runs wait in RQ's scheduled registry until due: nothing is lost there.
    started |= set(queue.scheduled_job_registry.get_job_ids(cleanup=False))
    waiting = {held.run_id for held in store.held_runs()}
    requeued = []
    for run in store.unclaimed_runs(older_than_s=settings.lease_ttl_s, limit=limit):
        run_id = run.run_id
        if store.run_record(run.session_id, run_id).state is not RunState.QUEUED:
            store.forget_unclaimed(run.session_id, run_id)  # record gone (expired) or moved on
            continue
        if run_id in started or run_id in waiting or not client.exists(job_key(run_id)):
            continue
        if any(client.lpos(key, run_id) is not None for key in lists):
            continue  # waiting its turn in a queue: nothing is lost
        seen_key = store.keys.first_seen_stranded(run_id)
        if client.set(seen_key, 1, nx=True, ex=max(1, int(settings.lease_ttl_s * 4))):
            continue  # first sighting: a live worker may be starting it this instant
        if (client.ttl(seen_key) or 0) > settings.lease_ttl_s * 3:
            continue
        queue.push_job_id(run_id, at_front=True)
        client.delete(seen_key)
        log.warning("vanished_job_requeued", run_id=run_id, session_id=run.session_id)
        requeued.append(run_id)
    return requeued


def _valid_ids(session_id: str, run_id: str, *, source: str) -> bool:
    """Ids read back from Redis name keys: skip (and log) any that submit would refuse."""
    if is_session_id(session_id) and is_run_id(run_id):
        return True
    log.warning("invalid_ids_skipped", source=source, session_id=session_id, run_id=run_id)
    return False


def _requeue_stranded(client: redis.Redis, settings: Settings) -> None:
    """Put back jobs a worker took off the queue but died before starting.

    RQ moves a job to an intermediate list when a worker dequeues it, and out of it
    a moment later; one still there a lease after we first saw it was never
    started. Its run has not begun, so handing it to another worker is safe.
    """
    queue = Queue(settings.queue_name, connection=client, serializer=JSONSerializer)
    intermediate = IntermediateQueue(queue.key, client)
    started = set(queue.started_job_registry.get_job_ids(cleanup=False))
    cutoff = timedelta(seconds=settings.lease_ttl_s)
    for job_id in intermediate.get_job_ids():
        if job_id in started or intermediate.set_first_seen(job_id):
            continue  # being started, or first sighting: look again next round
        first_seen = intermediate.get_first_seen(job_id)
        if first_seen is None or datetime.now(UTC) - first_seen < cutoff:
            continue
        with client.pipeline() as pipe:
            pipe.lrem(intermediate.key, 1, job_id)
            pipe.delete(intermediate.get_first_seen_key(job_id))
            queue.push_job_id(job_id, pipeline=pipe, at_front=True)
            pipe.execute()
        log.warning("stranded_job_requeued", run_id=job_id)


def _reap_undelivered(store: RunStore) -> int:
    """Runs RQ handed to a worker that died before it could claim them.

    RQ marks a job started when a worker takes it; our claim follows within
    milliseconds. A started job whose run is still queued with no wait marker a
    lease after we first noticed it was never picked up by a live worker.
    """
    client, settings = store.redis, store.settings
    registry = StartedJobRegistry(settings.queue_name, connection=client)
    lost = 0
    for run_id in registry.get_job_ids(cleanup=False):
        if not is_run_id(run_id):
            continue  # not a job we enqueued: it never had a run to declare lost
        seen_key = store.keys.first_seen_stranded(run_id)
        if client.set(seen_key, 1, nx=True, ex=max(1, int(settings.lease_ttl_s * 4))):
            continue  # first sighting: give its worker a lease's time to claim it
        if (client.ttl(seen_key) or 0) > settings.lease_ttl_s * 3:
            continue
        try:
            job = Job.fetch(run_id, connection=client, serializer=JSONSerializer)
        except NoSuchJobError:
            continue
        session_id = _session_of(job.args[0] if job.args else None)
        if session_id is None or not is_session_id(session_id):
            continue
        record = store.run_record(session_id, run_id)
        if record.state is RunState.FINISHED:
            _settle_ended(client, settings, job, record.final_status or "")
            continue
        lost += reap_if_lost(store, session_id, run_id, waiting=True)
    return lost


def _settle_ended(client: redis.Redis, settings: Settings, job: Job, final_status: str) -> None:
    """A run that ended while RQ still shows its job started: settle RQ's records.

    This happens when Redis went away just as a work horse finished, so neither it
    nor its worker could do RQ's bookkeeping. The run itself is complete; only the
    started-registry entry is stale, unless a live worker is still on the job.
    """
    if _worker_busy_with(client, job):
        return
    if final_status == RunStatus.SUCCEEDED.value:
        registry = StartedJobRegistry(settings.queue_name, connection=client)
        stale = _registry_entries(client, registry.key, job.id)
        with client.pipeline() as pipe:
            if stale:
                pipe.zrem(registry.key, *stale)
            job.set_status(JobStatus.FINISHED, pipeline=pipe)
            pipe.execute()
    elif final_status == RunStatus.INTERRUPTED.value:
        mark_canceled(client, settings.queue_name, job.id)
    else:
        fail_rq_job(client, settings, job.id, f"the run ended {final_status or 'unknown'}")
    log.warning("rq_job_settled", run_id=job.id, final_status=final_status)


def _worker_busy_with(client: redis.Redis, job: Job) -> bool:
    """Is a live worker still executing this job (RQ's bookkeeping in progress)?"""
    if not job.worker_name:
        return False
    index = cast(set[bytes], client.smembers(f"rq:worker:{job.worker_name}:executions"))
    for member in index:
        composite = member.decode(errors="replace")
        if composite.split(":", 1)[0] == job.id and client.exists(f"rq:execution:{composite}"):
            return True
    return False


def _registry_entries(client: redis.Redis, registry_key: str, job_id: str) -> list[bytes]:
    """Started-registry members of a job (`<job id>:<execution id>`, or the bare id)."""
    members = cast(list[bytes], client.zrange(registry_key, 0, -1))
    return [m for m in members if m.decode(errors="replace").split(":", 1)[0] == job_id]


def _session_of(payload: object) -> str | None:
    job = payload.get("job") if isinstance(payload, dict) else None
    session_id = job.get("session_id") if isinstance(job, dict) else None
    return session_id if isinstance(session_id, str) else None


def fail_rq_job(client: redis.Redis, settings: Settings, run_id: str, message: str) -> None:
    """Take a lost run's RQ job out of the started registry and mark it failed."""
    try:
        job = Job.fetch(run_id, connection=client, serializer=JSONSerializer)
    except NoSuchJobError:
        return
    registry = StartedJobRegistry(settings.queue_name, connection=client)
    # Entries are `<job id>:<execution id>`; a worker killed mid-start can leave one
    # whose execution record is gone, so match on the job id.
    stale = _registry_entries(client, registry.key, run_id)
    with client.pipeline() as pipe:
        if stale:
            pipe.zrem(registry.key, *stale)
        if job.get_status(refresh=False) not in _ENDED_RQ_STATUSES:
            record_job_failure(job, f"claude-queue: {message}", pipe)
        pipe.execute()


_ENDED_RQ_STATUSES = frozenset(
    {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
)


def release_worker_queues(store: RunStore) -> int:
    """Move jobs off workers' own queues onto the shared queue; returns how many moved.

    A worker that is gone (no RQ record, its death recorded, or its process missing
    from this host) loses its whole queue and its warm advertisements at once. A live
    worker takes its jobs at once when idle and moves them away when it starts a job,
    so a job heading its queue for a lease's time is not being taken (the worker is
    stuck, or died on another host and RQ does not know yet): it moves too. Moving a
    job off a live worker's queue costs only the warm start.
    """
    client, settings = store.redis, store.settings
    moved = 0
    for worker_name, own in worker_queues(client, settings.queue_name).items():
        gone = _worker_gone(client, worker_name)
        if not gone and not head_waiting(client, own, min_age_s=settings.lease_ttl_s):
            continue
        if gone:
            # First: a submit that read one of these and has not committed looks again.
            store.withdraw_warm(worker_name, list(store.warm_sessions(worker_name)))
            client.delete(store.keys.worker_warm(worker_name))
        run_ids = move_queued(client, own, settings.queue_name)
        if gone:
            forget_worker_queue(client, own)
        if run_ids:
            log.warning("worker_queue_released", worker=worker_name, gone=gone, run_ids=run_ids)
        moved += len(run_ids)
    return moved


def _worker_gone(client: redis.Redis, worker_name: str) -> bool:
    """No live RQ worker of this name: no record, its death recorded, or a record of
    this host whose process is gone."""
    key = f"{Worker.redis_worker_namespace_prefix}{worker_name}"
    raw = cast(dict[Any, Any], client.hgetall(key))
    record = {text(k): text(v) or "" for k, v in raw.items()}
    if not record or record.get("death"):
        return True
    pid = record.get("pid", "")
    return (
        record.get("hostname") == socket.gethostname() and pid.isdigit() and not is_alive(int(pid))
    )


def kill_orphans(store: RunStore, keep: Callable[[], set[str]] = set) -> int:
    """Kill this host's leftover processes of runs that are not running any more.

    Warm CLIs outlive their run on purpose: every worker records their markers
    (store.note_warm_trees), and `keep` adds this worker's own; both are read after
    the scan, so a CLI parked meanwhile is spared.
    """
    killed = 0
    # /proc first, then Redis: a run is in `running` before its CLI is spawned, so a
    # process seen by the scan whose run is missing from the later read is a leftover.
    marked = marked_runs(store.settings.scope)
    running = store.running_run_ids() | store.warm_tree_ids() | keep()
    for run_id in marked - running:
        killed += kill_run_tree(run_id, None)
    if killed:
        log.warning("orphans_killed", processes=killed)
    return killed
