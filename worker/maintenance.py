"""Background duties of every worker process, beside RQ's own loop.

Every `reaper_interval_s`:
- close warm CLIs idle past WARM_IDLE_S, or whose session moved on (simple mode);
- locally, kill leftovers of runs that are no longer running (this host only);
- put webhook deliveries whose retry wait is over back on the queue;
- if elected (a short Redis lock, so only one worker does it at a time),
  declare runs lost whose owner stopped renewing its lease, and move runs waiting
  on the own queue of a worker that is gone or stuck to the shared queue.
"""

from __future__ import annotations

import threading

import redis
import structlog

from shared.connection import sync_redis
from shared.runstore import RunStore
from worker.context import WorkerContext
from worker.reaper import kill_orphans, reap_all, release_worker_queues
from worker.webhooks import promote_due

log = structlog.get_logger(__name__)

# Take the reaper lock, or keep it if it is already ours.
_ELECT_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class Maintenance:
    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._client = sync_redis(ctx.settings)
        self._store = RunStore(self._client, ctx.settings)
        self._elect = self._client.register_script(_ELECT_LUA)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._ctx.settings.reaper_interval_s + 1)
        self._client.close()

    def run_once(self) -> int:
        """One round; returns how many runs were declared lost."""
        ctx = self._ctx
        self._tend_warm()
        kill_orphans(self._store, keep=ctx.warm.tree_ids if ctx.warm else set)
        promote_due(self._client, ctx.settings)  # webhook retries whose wait is over
        lock_ms = int(ctx.settings.reaper_interval_s * 2000)
        elected = self._elect(keys=[ctx.keys.reaper_lock], args=[ctx.worker_name, lock_ms])
        if elected != 1:
            return 0
        lost = reap_all(self._store)
        # Runs routed to a worker that died or is stuck go to the shared queue.
        release_worker_queues(self._store)
        return lost

    def _tend_warm(self) -> None:
        """Close warm CLIs that expired or whose session moved on; stop advertising them."""
        pool = self._ctx.warm
        if pool is None:
            return
        closed = pool.expire()
        tokens = pool.tokens()
        fences = self._store.fences(list(tokens))
        for session_id, token in tokens.items():
            # Another run of the session claimed since (or it was deleted: no counter).
            if fences.get(session_id) != token and pool.discard(session_id):
                closed.append(session_id)
        self._store.withdraw_warm(self._ctx.worker_name, closed)
        self._store.forget_warm_trees(pool.drain_closed_trees())
        self._store.note_warm_trees(pool.trees())

    def _loop(self) -> None:
        while not self._stop.wait(self._ctx.settings.reaper_interval_s):
            try:
                self.run_once()
            except redis.RedisError as exc:
                log.warning("maintenance_failed", error=str(exc))
