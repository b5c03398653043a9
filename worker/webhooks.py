"""Webhook deliveries of finished runs, as RQ jobs on the shared queue.

- `after_run` (the run-end hook, once the run's `finished` is published) and
  `enqueue_for_run` (for runs another process ended: the reaper, a worker whose work
  horse died) enqueue one delivery job per run: `worker.webhooks.deliver`, job id
  `webhook-<run id>`, with RQ's `Retry` (settings.webhook_retry_s). Enqueued at most once
  per run while its job is kept.
- `deliver` is that job: it reads the run's events back from its session log, builds
  the body (shared.webhooks), checks the target and POSTs (worker.webhook_delivery).
  2xx: delivered. A network error, 408, 429, 5xx or a run whose `finished` is not
  (yet) in its log raises, and RQ schedules a retry. An invalid payload, a refused
  target, a redirect or another 4xx fails the job for good (no retry).
- `promote_due` moves delivery jobs whose retry is due from RQ's scheduled registry
  back onto the queue. Every worker calls it each maintenance round, atomically, so a
  retry survives the death of any one worker. RQ's scheduler leaves them to it
  (worker/scheduler.py): the two moving one retry at once pushed it twice.

The delivery job lives in Redis from enqueue to its end, so it survives the process
that enqueued or attempted it: any worker of the queue performs the next attempt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NoReturn, cast

import redis
import structlog
from pydantic import ValidationError
from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.utils import utcformat

from shared.events import Envelope, EventType
from shared.jobs import WEBHOOK_FUNCTION, RunRequest, describe_validation_error
from shared.rqjobs import job_key, queue_key
from shared.runstore import replies
from shared.settings import Settings
from shared.urls import redact_url
from shared.version import package_version
from shared.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookDelivery,
    sign,
    summarize,
    webhook_body,
)
from worker.context import through_outage

if TYPE_CHECKING:
    from worker.context import WorkerContext

log = structlog.get_logger(__name__)

DELIVERY_JOB_PREFIX = "webhook-"
# Waits before each retry (RQ takes whole seconds); its length is the number of retries.
REQUEST_TIMEOUT_S = 10.0
_JOB_TIMEOUT_S = 120
_RESULT_TTL_S = 24 * 3600  # a delivered job (and so the once-per-run guard) is kept a day
_FAILURE_TTL_S = 7 * 24 * 3600
_SCAN_PAGE = 200
_PROMOTE_BATCH = 100
_RETRIED_STATUSES = frozenset({408, 429})

# KEYS: scheduled registry, queue, then one job hash per id in ARGV[2..]. ARGV[1]: now.
# A job is moved only by whoever removes it from the registry.
_PROMOTE_LUA = """
local moved = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('HSET', KEYS[i + 1], 'status', 'queued', 'enqueued_at', ARGV[1])
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
return moved
"""


class DeliveryFailed(Exception):
    """This attempt failed; RQ retries the job while it has retries left."""


class DeliveryAbandoned(Exception):
    """The delivery can never succeed; the job fails without a retry."""


def delivery_job_id(run_id: str) -> str:
    """The RQ job id of a run's webhook delivery."""
    return f"{DELIVERY_JOB_PREFIX}{run_id}"


# -- enqueueing ----------------------------------------------------------------------


def enqueue_delivery(client: redis.Redis, settings: Settings, delivery: WebhookDelivery) -> bool:
    """Enqueue the delivery job unless the run has one already; True if enqueued."""
    job_id = delivery_job_id(delivery.run_id)
    queue = Queue(settings.queue_name, connection=client, serializer=JSONSerializer)
    with client.pipeline() as pipe:
        try:
            pipe.watch(job_key(job_id))  # type: ignore[no-untyped-call]
            if pipe.exists(job_key(job_id)):
                return False
            queue.enqueue_call(
                WEBHOOK_FUNCTION,
                args=(delivery.model_dump(mode="json"),),
                job_id=job_id,
                timeout=_JOB_TIMEOUT_S,
                result_ttl=_RESULT_TTL_S,
                failure_ttl=_FAILURE_TTL_S,
                retry=Retry(
                    max=len(settings.webhook_retry_s), interval=list(settings.webhook_retry_s)
                ),
                description=f"claude-queue webhook of run {delivery.run_id}",
                pipeline=pipe,  # RQ puts it in MULTI
            )
            pipe.execute()
        except redis.WatchError:
            return False  # enqueued meanwhile by someone else
    return True


def after_run(ctx: WorkerContext, request: RunRequest) -> None:
    """Run-end hook: enqueue the webhook of a run whose `finished` is published.

    Never raises: the run's outcome stands whatever happens to its webhook.
    """
    url = request.job.webhook
    if url is None:
        return
    delivery = WebhookDelivery(session_id=request.job.session_id, run_id=request.run_id, url=url)
    try:
        enqueued = through_outage(lambda: enqueue_delivery(ctx.redis, ctx.settings, delivery))
    except redis.RedisError as exc:
        log.error("webhook_not_enqueued", run_id=request.run_id, error=str(exc))
        return
    log.info("webhook_enqueued", run_id=request.run_id, enqueued=enqueued)


def enqueue_for_run(client: redis.Redis, settings: Settings, run_id: str) -> bool:
    """Enqueue the webhook of a run ended by another process (reaper, worker stop).

    The URL is read from the run's RQ job, as the producer stored it (JSON only:
    nothing is imported). False if the run has no webhook or its job is gone.
    """
    try:
        job = Job.fetch(run_id, connection=client, serializer=JSONSerializer)
        request = RunRequest.model_validate(job.args[0] if job.args else None)
    except (NoSuchJobError, ValidationError, ValueError):
        return False
    if request.run_id != run_id or request.job.webhook is None:
        return False
    delivery = WebhookDelivery(
        session_id=request.job.session_id, run_id=run_id, url=request.job.webhook
    )
    return enqueue_delivery(client, settings, delivery)


def promote_due(client: redis.Redis, settings: Settings) -> int:
    """Put delivery jobs whose retry is due back on the queue; returns how many moved."""
    registry = ScheduledJobRegistry(settings.queue_name, connection=client)  # type: ignore[no-untyped-call]
    now = time.time()
    due = cast(
        list[bytes],
        client.zrangebyscore(registry.key, "-inf", now, start=0, num=_PROMOTE_BATCH),
    )
    ids = [
        job_id
        for raw in due
        if (job_id := raw.decode(errors="replace")).startswith(DELIVERY_JOB_PREFIX)
    ]
    if not ids:
        return 0
    keys = [registry.key, queue_key(settings.queue_name), *(job_key(i) for i in ids)]
    # EVALSHA (workers may not EVAL): redis-py loads the script when Redis lacks it.
    promote = client.register_script(_PROMOTE_LUA)
    moved = int(promote(keys=keys, args=[utcformat(rq_now()), *ids]))
    if moved:
        log.info("webhook_retries_due", moved=moved)
    return moved


# -- the delivery job ----------------------------------------------------------------


def deliver(payload: Any) -> str:
    """RQ job function: POST one run's `finished` to its webhook."""
    # httpx: imported by the delivery job only, not by every worker at start.
    import httpx

    from worker.webhook_delivery import TargetRefused, TargetUnreachable, check_target, post

    ctx = _worker_context()
    try:
        delivery = WebhookDelivery.model_validate(payload)
    except ValidationError as exc:
        _abandon(f"invalid delivery payload: {describe_validation_error(exc)}")
    structlog.contextvars.bind_contextvars(delivery_id=delivery.delivery_id, attempt=_attempt())
    settings = ctx.settings
    summary = summarize(delivery.run_id, _run_events(ctx, delivery))
    if summary is None:
        # Not yet (its worker still holds it while Redis was away), or never (the
        # session was deleted): retried, so the first case is delivered.
        _retry(f"run {delivery.run_id} has no finished event in its session log")
    body = webhook_body(delivery, summary)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"claude-queue/{package_version()}",
        DELIVERY_HEADER: delivery.delivery_id,
    }
    if settings.webhook_secret is None:
        log.warning("webhook_unsigned", detail="CLAUDE_QUEUE_WEBHOOK_SECRET is not set")
    else:
        headers[SIGNATURE_HEADER] = sign(settings.webhook_secret.get_secret_value(), body)
    try:
        target = check_target(delivery.url, allow_private=settings.webhook_allow_private)
        posted = post(target, body, headers, timeout_s=REQUEST_TIMEOUT_S)
    except TargetRefused as exc:
        _abandon(str(exc))
    except (TargetUnreachable, httpx.HTTPError) as exc:
        _retry(f"webhook delivery to {redact_url(delivery.url)} failed: {exc}")
    return _judge(posted.status, target.shown, posted.address)


def _judge(status: int, shown: str, address: str) -> str:
    if 200 <= status < 300:
        log.info("webhook_delivered", url=shown, address=address, status=status)
        return f"delivered: HTTP {status}"
    message = f"webhook {shown} answered HTTP {status}"
    if status in _RETRIED_STATUSES or status >= 500:
        _retry(message)
    if 300 <= status < 400:
        message += " (redirects are not followed: configure the final URL)"
    _abandon(message)


def _run_events(ctx: WorkerContext, delivery: WebhookDelivery) -> list[Envelope]:
    """The run's events in order, read backwards from the newest until its `queued`."""
    key = ctx.keys.log(delivery.session_id)
    found: list[Envelope] = []
    upper = "+"
    while True:
        entries = cast(list[Any], ctx.redis.xrevrange(key, upper, "-", count=_SCAN_PAGE))
        page = replies.envelopes(entries)
        for envelope in page:
            if envelope.run_id == delivery.run_id:
                found.append(envelope)
                if envelope.type is EventType.QUEUED:
                    return found[::-1]
        if len(page) < _SCAN_PAGE:
            return found[::-1]
        upper = f"{page[-1].seq - 1}-0"  # entry ids are `<seq>-0`


def _worker_context() -> WorkerContext:
    # Imported here: worker.job imports this module for its run-end hook.
    from worker.job import _context

    ctx = _context.get()
    if ctx is None:
        raise RuntimeError("deliver runs only on a claude-queue worker (worker.rqworker)")
    return ctx


def _attempt() -> int:
    job = get_current_job()
    if job is None or job.retries_left is None:
        return 1
    return len(job.retry_intervals or []) - int(job.retries_left) + 1


def _retry(message: str) -> NoReturn:
    log.warning("webhook_failed", error=message)
    raise DeliveryFailed(message)


def _abandon(message: str) -> NoReturn:
    """Fail the job for good: RQ reads retries_left of this very job object."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    log.error("webhook_refused", error=message)
    raise DeliveryAbandoned(message)
