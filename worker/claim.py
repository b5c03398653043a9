"""Claim a run for this worker: one run at a time per session, in submit order.

A run may start only when it heads its session's pending list and the session
lease is free. Until then the worker waits, woken by the session's `finished`
events; a run ahead whose owner died (lease expired) is declared lost so the
session does not stall.
"""

from __future__ import annotations

import time

import structlog
from redis.client import PubSub

from shared.connection import subscribe_confirmed
from shared.runstore import Claimed, Skip
from worker.context import WorkerContext
from worker.limits import NOT_HEAD, OK, Slots
from worker.publisher import Publisher
from worker.reaper import reap_if_lost

log = structlog.get_logger(__name__)

_FINISHED_MARK = b'"type":"finished"'


def claim_run(
    ctx: WorkerContext, session_id: str, run_id: str, slots: Slots | None = None
) -> tuple[Publisher, str] | None:
    """Move the run from queued to running for us, waiting for the session's turn and
    then, with `slots`, for a concurrency-limit slot (worker/limits.py).

    Returns the run's publisher and fencing token, or None if this delivery is not
    ours to run (a duplicate, or cancelled while it waited).
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        session_id=session_id, run_id=run_id, worker=ctx.worker_name
    )
    store = ctx.store
    pubsub = None
    try:
        while True:
            got = OK if slots is None else slots.acquire()
            if got not in (OK, NOT_HEAD):
                continue  # every slot of limit `got` was held: we waited; look again
            claim = store.claim(session_id, run_id, worker=ctx.worker_name, host=ctx.host)
            if isinstance(claim, Claimed):
                return _publisher(ctx, session_id, run_id, claim.token), claim.token
            if slots is not None and got == OK:
                slots.release()  # taken just before the run was cancelled or taken
            if isinstance(claim, Skip):
                log.info("run_skipped", state=claim.state.value)
                return None
            head = claim.head
            if head and head != run_id and reap_if_lost(store, session_id, head):
                continue
            if pubsub is None:
                log.info("run_waiting_for_session", ahead=head or "")
                pubsub = ctx.redis.pubsub()
                subscribe_confirmed(pubsub, store.keys.channel(session_id))
                continue  # re-check: the run ahead may have finished before we listened
            _wait_for_a_finish(pubsub, ctx.settings.lease_renew_s)
    finally:
        if pubsub is not None:
            pubsub.close()


def _wait_for_a_finish(pubsub: PubSub, limit_s: float) -> None:
    """Block until some run of the session finishes, or limit_s passes."""
    deadline = time.monotonic() + limit_s
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message and message.get("type") == "message" and _FINISHED_MARK in message["data"]:
            return


def _publisher(ctx: WorkerContext, session_id: str, run_id: str, token: str) -> Publisher:
    return Publisher(
        ctx.store,
        session_id=session_id,
        run_id=run_id,
        token=token,
        max_event_bytes=ctx.settings.max_event_bytes,
        max_buffer_bytes=ctx.settings.publish_buffer_bytes,
    )
