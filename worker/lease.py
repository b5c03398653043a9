"""Keep a run's session lease alive (the run's heartbeat) from a background thread.

The lease says which run may execute in a session now; its fencing token is
checked by every publish. If renewal finds the lease gone or taken, the run has
lost its session: `on_lost` is called once so the runner can stop the CLI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis
import structlog

from shared.runstore import RunStore

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """Renews one run's lease (for the store's lease TTL) every `renew_s` until stopped."""

    def __init__(
        self,
        store: RunStore,
        *,
        session_id: str,
        run_id: str,
        token: str,
        renew_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._store = store
        self._run = (session_id, run_id, token)
        self._renew_s = renew_s
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._renew_s + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self._renew_s):
            try:
                still_ours = self._store.renew(*self._run)
            except redis.RedisError as exc:
                # Redis unreachable: keep trying; if it stays away past the TTL the
                # lease is gone anyway and the next successful call reports it.
                log.warning("lease_renew_failed", error=str(exc))
                continue
            if not still_ours:
                log.error("lease_lost")
                self._on_lost()
                return
