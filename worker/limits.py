"""Take a concurrency-limit slot before claiming a run, waiting while every slot is held
(shared/limits.py says why these are ours and not RQ's RateLimit)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from redis.client import PubSub

from shared import limits
from shared.connection import subscribe_confirmed
from worker.context import WorkerContext

log = structlog.get_logger(__name__)

OK, NOT_HEAD = "ok", "not_head"


class Slots:
    """The limit slots one run needs; acquire before claiming, release when it ends."""

    def __init__(self, ctx: WorkerContext, session_id: str, run_id: str, limit_key: str | None):
        self.ctx = ctx
        self.session_id = session_id
        self.run_id = run_id
        self.needed = limits.applicable(ctx.settings.concurrency_limits, limit_key)
        self._pubsub: PubSub | None = None
        self._script: Any = None

    def acquire(self) -> str:
        """OK (slots taken), NOT_HEAD (the session's turn comes first), or the limit key
        that is full (after waiting for a slot to free, at most one lease renewal)."""
        if not self.needed:
            return OK
        if self._pubsub is None:
            # Listening before trying: a slot freed right after a full answer wakes us.
            self._pubsub = self.ctx.redis.pubsub()
            subscribe_confirmed(self._pubsub, limits.channel(self.ctx.keys))
        reply = self._call()
        if reply[0] != "full":
            return reply[0]
        log.info("run_waiting_for_limit", key=reply[1])
        self._wait(self.ctx.settings.lease_renew_s)
        return reply[1]

    def _call(self) -> list[str]:
        ctx, k, s = self.ctx, self.ctx.keys, self.ctx.settings
        if self._script is None:
            self._script = ctx.redis.register_script(limits.ACQUIRE_LUA)
        now = time.time()
        keys = [
            k.pending(self.session_id),
            k.lease(self.session_id),
            k.wait_marker(self.session_id, self.run_id),
            k.waiting,
            k.seq(self.session_id),
            k.log(self.session_id),
            k.sessions,
            k.run(self.session_id, self.run_id),
            *(limits.slot_key(k, key) for key, _ in self.needed),
        ]
        args: list[str | int | float] = [
            self.run_id,
            self.session_id,
            ctx.worker_name,
            now,
            int(s.lease_ttl_s * 1000),
            k.prefix,
            s.lease_ttl_s,
            "",
            limits.waiting_body_prefix(self.session_id, self.run_id, now),
            k.channel(self.session_id),
            s.event_log_maxlen,
            s.event_log_ttl_s,
        ]
        for key, most in self.needed:
            args.extend((key, most))
        reply = self._script(keys=keys, args=args)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]

    def _wait(self, limit_s: float) -> None:
        assert self._pubsub is not None
        deadline = time.monotonic() + limit_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message and message.get("type") == "message":
                return

    def release(self) -> None:
        """Give the slots back and wake waiters (a slot of an ended run is freed anyway)."""
        self.close()
        if not self.needed:
            return
        k = self.ctx.keys
        member = limits.member(self.session_id, self.run_id)
        with self.ctx.redis.pipeline(transaction=False) as pipe:
            for key, _ in self.needed:
                pipe.zrem(limits.slot_key(k, key), member)
            pipe.publish(limits.channel(k), self.run_id)
            pipe.execute()

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
