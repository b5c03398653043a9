"""What every run on a worker needs, built once when the worker starts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from shared.backoff import Backoff
from shared.keys import Keys
from shared.settings import Settings

T = TypeVar("T")
# The caps retry_backoff() gives under default settings, for callers without settings.
_OUTAGE_BACKOFF = Backoff(first_s=0.05, max_s=2.0)


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    worker_name: str
    host: str


def text(value: object) -> str | None:
    """A Redis reply as str (None stays None)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def through_outage(
    call: Callable[[], T], *, limit_s: float = 60.0, backoff: Backoff | None = None
) -> T:
    """Run a Redis call, retrying with backoff while Redis is unreachable (up to limit_s)."""
    deadline = time.monotonic() + limit_s
    delays = (backoff or _OUTAGE_BACKOFF).delays()
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
