"""The asyncio client, for web backends: same API as `Client`, awaitable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import structlog

from producer.cancelling import CancelOutcome, CancelResult, CancelWait, cancel_script_call
from producer.client import Client, QueueStatus
from producer.cursor import (
    REPLAY_PAGE,
    SeqCursor,
    Verdict,
    decode_page,
    finished_of,
    log_end,
    log_start,
)
from producer.errors import StreamTimeout
from producer.fanout import LOST, PubSubFanout, Subscription
from producer.sessions import SessionInfo
from shared.connection import async_redis
from shared.events import Envelope, FinishedData
from shared.jobs import OnBusy, PromptJob
from shared.settings import Settings
from shared.store import CANCEL_LUA, keys_from

log = structlog.get_logger(__name__)

_RECONNECT_FIRST_S = 0.1
_RECONNECT_MAX_S = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AsyncClient:
    """Asyncio client. Submitting goes through RQ's (sync) enqueue in a thread."""

    def __init__(self, settings: Settings, connection: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = connection or async_redis(settings)
        self.keys = keys_from(settings)
        self._sync = Client(settings)
        self._cancel_script = self.redis.register_script(CANCEL_LUA)
        self._fanout = PubSubFanout(self.redis)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AsyncClient:
        return cls(settings or Settings.from_environment())

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> AsyncClient:
        return cls(Settings(redis_url=url, **overrides))

    async def aclose(self) -> None:
        await self._fanout.aclose()
        await self.redis.aclose()
        self._sync.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def submit(
        self, job: PromptJob | None = None, /, *, on_busy: OnBusy = "enqueue", **fields: Any
    ) -> AsyncRunHandle:
        """See `Client.submit`; raises InvalidJobError before anything is queued."""
        handle = await asyncio.to_thread(self._sync.submit, job, on_busy=on_busy, **fields)
        return AsyncRunHandle(self, handle.session_id, handle.run_id, handle.queued_seq)

    async def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        return await asyncio.to_thread(self._sync.sessions, limit=limit)

    async def session(self, session_id: str) -> SessionInfo | None:
        return await asyncio.to_thread(self._sync.session, session_id)

    async def delete_session(self, session_id: str, *, force: bool = False) -> int:
        return await asyncio.to_thread(self._sync.delete_session, session_id, force=force)

    async def status(self) -> QueueStatus:
        return await asyncio.to_thread(self._sync.status)

    async def history(self, session_id: str, *, after: int = 0) -> list[Envelope]:
        return [e async for e in self.stream(session_id, after=after, follow=False)]

    async def stream(
        self,
        session_id: str,
        *,
        after: int = 0,
        follow: bool = True,
        stop_at_finish: bool = False,
        run_id: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Envelope]:
        """Subscribe, replay after `after`, then follow; see `Client.stream`."""
        cursor = SeqCursor(last_seq=after, stop_at_finish=stop_at_finish, run_id=run_id)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = _RECONNECT_FIRST_S
        while not cursor.done:
            try:
                async for envelope in self._stream_once(session_id, cursor, follow, deadline):
                    yield envelope
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                log.warning("stream_reconnect", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _stream_once(
        self, session_id: str, cursor: SeqCursor, follow: bool, deadline: float | None
    ) -> AsyncIterator[Envelope]:
        subscription = await self._fanout.open(self.keys.channel(session_id)) if follow else None
        try:
            async for envelope in self._replay(session_id, cursor.last_seq, None):
                yield envelope
                cursor.delivered(envelope)
                if cursor.done:
                    return
            if subscription is None:
                return
            while True:
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    raise StreamTimeout(
                        "the stream reached its time limit before its stopping point"
                    )
                live = await _next_live(subscription, min(wait, 1.0))
                for item in await self._to_deliver(session_id, cursor, subscription, live):
                    if item.seq <= cursor.last_seq:
                        continue
                    yield item
                    cursor.delivered(item)
                    if cursor.done:
                        return
        finally:
            if subscription is not None:
                await self._fanout.close(subscription)

    async def _to_deliver(
        self,
        session_id: str,
        cursor: SeqCursor,
        subscription: Subscription,
        live: Envelope | None,
    ) -> list[Envelope]:
        """What follows the cursor, given a live event (or none, after a wait)."""
        if subscription.lagging:  # live messages were dropped: the log has them all
            subscription.lagging = False
            return [e async for e in self._replay(session_id, cursor.last_seq, None)]
        if live is None:
            return []
        verdict = cursor.judge(live)
        if verdict is Verdict.DUPLICATE:
            return []
        if verdict is Verdict.GAP:  # a live message was missed: the log has it
            return [e async for e in self._replay(session_id, cursor.last_seq, live.seq)]
        return [live]

    async def _replay(
        self, session_id: str, after: int, upto: int | None
    ) -> AsyncIterator[Envelope]:
        log_key = self.keys.log(session_id)
        start = log_start(after)
        while True:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self.redis.xrange(log_key, start, log_end(upto), count=REPLAY_PAGE),
            )
            for envelope in decode_page(entries):
                yield envelope
            if len(entries) < REPLAY_PAGE:
                return
            start = "(" + entries[-1][0].decode()

    async def cancel(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        wait: bool = False,
        timeout_s: float | None = None,
        reason: str = "cancelled by request",
    ) -> CancelResult:
        """See `Client.cancel`."""
        target = run_id
        if target is None:
            head = await self.redis.lindex(self.keys.pending(session_id), 0)
            target = None if head is None else _text(head)
        if target is None:
            return CancelResult(CancelOutcome.NOTHING_TO_CANCEL, session_id, None)
        keys, args = cancel_script_call(self.settings, self.keys, session_id, target, reason)
        channel = self.keys.channel(session_id)
        subscription = await self._fanout.open(channel) if wait else None
        try:
            outcome = CancelOutcome(_text(await self._cancel_script(keys=keys, args=args)))
            if outcome is not CancelOutcome.CANCELLED_RUNNING or subscription is None:
                return CancelResult(outcome, session_id, target)
            limit = timeout_s if timeout_s is not None else self.settings.cancel_ack_timeout_s
            waiter = CancelWait(target, limit)
            while (pause := waiter.wait_s()) is not None:
                if waiter.is_done(await _next_live(subscription, pause)):
                    return CancelResult(outcome, session_id, target)
                # Re-send; the script also says if the run finished meanwhile.
                if waiter.resend_due():
                    again = _text(await self._cancel_script(keys=keys, args=args))
                    if again == CancelOutcome.ALREADY_FINISHED:
                        return CancelResult(outcome, session_id, target)
            return CancelResult(CancelOutcome.OWNER_UNREACHABLE, session_id, target)
        finally:
            if subscription is not None:
                await self._fanout.close(subscription)


async def _next_live(subscription: Subscription, timeout_s: float) -> Envelope | None:
    """The next live event, None after timeout_s; raises if the connection was lost."""
    try:
        data = await asyncio.wait_for(subscription.queue.get(), timeout_s)
    except TimeoutError:
        return None
    if data == LOST:
        raise redis.ConnectionError("the pub/sub connection was lost")
    return Envelope.from_json(data)


@dataclass(frozen=True, slots=True)
class AsyncRunHandle:
    """A submitted run, for asyncio code."""

    client: AsyncClient
    session_id: str
    run_id: str
    queued_seq: int

    def stream(self, *, timeout_s: float | None = None) -> AsyncIterator[Envelope]:
        return self.client.stream(
            self.session_id,
            after=self.queued_seq - 1,
            stop_at_finish=True,
            run_id=self.run_id,
            timeout_s=timeout_s,
        )

    async def wait(self, *, timeout_s: float | None = None) -> FinishedData:
        async for envelope in self.stream(timeout_s=timeout_s):
            if (finished := finished_of(envelope, self.run_id)) is not None:
                return finished
        raise StreamTimeout(f"run {self.run_id} ended its stream without a finished event")

    async def cancel(self, *, wait: bool = False, timeout_s: float | None = None) -> CancelResult:
        return await self.client.cancel(
            self.session_id, run_id=self.run_id, wait=wait, timeout_s=timeout_s
        )
