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
from shared.store import CLAIM_LUA, LogLimits
from worker.context import WorkerContext, text
from worker.publisher import Publisher
from worker.reaper import reap_if_lost

log = structlog.get_logger(__name__)

_FINISHED_MARK = b'"type":"finished"'


def claim_run(ctx: WorkerContext, session_id: str, run_id: str) -> tuple[Publisher, str] | None:
    """Move the run from queued to running for us, waiting for the session's turn.

    Returns the run's publisher and fencing token, or None if this delivery is not
    ours to run (a duplicate, or cancelled while it waited).
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        session_id=session_id, run_id=run_id, worker=ctx.worker_name
    )
    keys, settings = ctx.keys, ctx.settings
    claim = ctx.redis.register_script(CLAIM_LUA)
    pubsub = None
    try:
        while True:
            result = claim(
                keys=[
                    keys.run(session_id, run_id),
                    keys.pending(session_id),
                    keys.running,
                    keys.lease(session_id),
                    keys.fence(session_id),
                    keys.wait_marker(session_id, run_id),
                    keys.waiting,
                ],
                args=[
                    run_id,
                    session_id,
                    ctx.worker_name,
                    ctx.host,
                    time.time(),
                    settings.event_log_ttl_s,
                    int(settings.lease_ttl_s * 1000),
                ],
            )
            state = text(result[0])
            if state == "claimed":
                token = text(result[1]) or ""
                return _publisher(ctx, session_id, run_id, token), token
            if state != "waiting":
                log.info("run_skipped", state=state)
                return None
            head = text(result[1])
            if (
                head
                and head != run_id
                and reap_if_lost(ctx.redis, keys, settings, session_id, head)
            ):
                continue
            if pubsub is None:
                log.info("run_waiting_for_session", ahead=head)
                pubsub = ctx.redis.pubsub()  # type: ignore[no-untyped-call]
                subscribe_confirmed(pubsub, keys.channel(session_id))
                continue  # re-check: the run ahead may have finished before we listened
            _wait_for_a_finish(pubsub, settings.lease_renew_s)
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
        ctx.redis,
        ctx.keys,
        LogLimits.from_settings(ctx.settings),
        session_id=session_id,
        run_id=run_id,
        token=token,
        max_event_bytes=ctx.settings.max_event_bytes,
        max_buffer_bytes=ctx.settings.publish_buffer_bytes,
    )
