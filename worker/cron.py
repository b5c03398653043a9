"""The cron ticker: a thread in every worker that runs the scheduler (CLAUDE_QUEUE_SCHEDULER).

Each step fires the crons whose latest tick nobody has claimed yet (producer/cron.py);
the claim in Redis makes one firing per tick however many workers tick.
"""

from __future__ import annotations

import threading
import time

import redis
import structlog

from producer.cron import tick_crons
from shared.connection import sync_redis
from shared.runstore import RunStore
from shared.settings import Settings

log = structlog.get_logger(__name__)

# Often enough for a per-second schedule; a missed tick is not fired late (only the latest).
TICK_INTERVAL_S = 0.5


class CronTicker:
    """Fires due crons every TICK_INTERVAL_S until stopped."""

    def __init__(self, settings: Settings) -> None:
        self._store = RunStore(sync_redis(settings), settings)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cron-ticker", daemon=True)

    def start(self) -> CronTicker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._store.redis.close()

    def _loop(self) -> None:
        while not self._stopping.wait(TICK_INTERVAL_S):
            try:
                for firing in tick_crons(self._store, time.time()):
                    log.info(
                        "cron_fired" if firing.run_id else "cron_firing_skipped",
                        cron=firing.name,
                        tick=firing.tick,
                        session_id=firing.session_id,
                        run_id=firing.run_id,
                        skipped=firing.skipped,
                    )
            except redis.RedisError as exc:
                log.warning("cron_tick_failed", error=str(exc))
            except Exception:
                log.exception("cron_tick_crashed")  # a bad cron must not stop the others


def start_cron_ticker(settings: Settings) -> CronTicker | None:
    """A running ticker when this worker runs the scheduler, else None."""
    return CronTicker(settings).start() if settings.scheduler else None
