"""Declare runs lost when their owner stopped renewing the session lease."""

from __future__ import annotations

import time
from typing import cast

import redis
import structlog

from shared.events import (
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    RunStatus,
    encode_body,
)
from shared.keys import Keys
from shared.settings import Settings
from shared.store import REAP_LUA

log = structlog.get_logger(__name__)

LOST_MESSAGE = (
    "the worker running this run stopped renewing its lease (it probably died); "
    "the run is declared lost"
)


def reap_if_lost(
    client: redis.Redis, keys: Keys, settings: Settings, session_id: str, run_id: str
) -> bool:
    """Write error + finished{lost} for the run if it is running with no live lease."""
    run_key = keys.run(session_id, run_id)
    started_at = cast(bytes | None, client.hget(run_key, "started_at"))
    now = time.time()
    duration = max(0.0, now - float(started_at)) if started_at else 0.0
    error = Event(type=EventType.ERROR, data=ErrorData(code=ErrorCode.LOST, message=LOST_MESSAGE))
    finished = Event(
        type=EventType.FINISHED,
        data=FinishedData(
            status=RunStatus.LOST, duration_s=round(duration, 6), reason=LOST_MESSAGE
        ),
    )
    reaped = client.register_script(REAP_LUA)(
        keys=[
            run_key,
            keys.pending(session_id),
            keys.running,
            keys.lease(session_id),
            keys.seq(session_id),
            keys.log(session_id),
            keys.sessions,
        ],
        args=[
            keys.channel(session_id),
            settings.event_log_maxlen,
            settings.event_log_ttl_s,
            now,
            session_id,
            run_id,
            encode_body(session_id, run_id, now, error),
            encode_body(session_id, run_id, now, finished),
        ],
    )
    if reaped == 1:
        log.warning("run_lost", session_id=session_id, run_id=run_id)
        return True
    return False


def reap_all(client: redis.Redis, keys: Keys, settings: Settings) -> int:
    """Check every running run once; returns how many were declared lost."""
    running = cast(dict[bytes, bytes], client.hgetall(keys.running))
    return sum(
        reap_if_lost(client, keys, settings, session_id.decode(), run_id.decode())
        for run_id, session_id in running.items()
    )
