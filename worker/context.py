"""What every run on a worker needs, built once when the worker starts."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.keys import Keys
from shared.settings import Settings


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
