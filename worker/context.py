"""What every run on a worker needs, built once when the worker starts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis

from shared.backoff import Backoff
from shared.keys import Keys
from shared.runstore import RunStore
from shared.settings import Settings
from worker.control import ControlSubscriber
from worker.warm import WarmPool

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
    # The warm CLIs of a simple-mode worker; None where no CLI may outlive its job.
    warm: WarmPool | None = None
    # Spawns go through it so the CLI dies with its spawner (proctree.death_signal_prefix).
    exec_prefix: tuple[str, ...] = ()
    # Every run record and event write of this worker goes through it (built from redis).
    store: RunStore = field(init=False)
    # The runs' control subscription, one connection kept across runs (worker/control.py).
    control: ControlSubscriber = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", RunStore(self.redis, self.settings))
        object.__setattr__(self, "control", ControlSubscriber(self.redis))


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
