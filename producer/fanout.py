"""One pub/sub connection per AsyncClient, fanned out to all of its streams.

A web backend may follow hundreds of sessions at once; a connection each would
exhaust the pool. Here one reader task owns the subscription connection and puts
each message on the queue of every stream following that channel: the same
`LiveMessage`, decoded (and validated) once, by whichever stream reads it first,
however many streams follow the channel (the gateway runs one per SSE client).

Queues are bounded. A stream that falls behind loses live messages and is told
so (`lagging`); it then catches up from the session log, which has every event.
If the connection drops, every queue gets `LOST` and the streams reconnect
(subscribe again, then replay after their last seq).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final

import redis
import redis.asyncio as aioredis
import structlog

from producer import pubsubread
from shared.backoff import Backoff
from shared.events import Envelope
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

_QUEUE_SIZE = 10_000
_CONFIRM_TIMEOUT_S = 10.0


class LiveMessage:
    """One pub/sub message, shared by every stream on its channel; decoded on first use."""

    __slots__ = ("_envelope", "_error", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._envelope: Envelope | None = None
        self._error: ValueError | None = None

    def envelope(self) -> Envelope:
        """The envelope it carries; raises (every time) if it is not a valid one."""
        if self._envelope is None:
            if self._error is not None:
                raise self._error
            try:
                self._envelope = Envelope.from_json(self.raw)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                self._error = exc
                raise
        return self._envelope


LOST: Final = LiveMessage(b"")  # queued when the shared connection dropped


@dataclass(eq=False)
class Subscription:
    channel: str
    queue: asyncio.Queue[LiveMessage] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    lagging: bool = False


class PubSubFanout:
    def __init__(self, client: aioredis.Redis, backoff: Backoff | None = None) -> None:
        self._client = client
        self._backoff = backoff or Backoff()
        self._pubsub = client.pubsub()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._broken = False

    async def open(self, channel: str) -> Subscription:
        """Follow a channel; returns once Redis confirmed the subscription."""
        subscription = Subscription(channel)
        async with self._lock:
            followers = self._subscribers.setdefault(channel, set())
            followers.add(subscription)
            if len(followers) == 1:
                self._confirmed[channel] = asyncio.Event()
                try:
                    await self._pubsub.subscribe(channel)
                except BaseException:
                    # Not followed after all: left registered, the next open of the
                    # channel would count it, skip the SUBSCRIBE and wait for a
                    # confirmation that never comes.
                    del self._subscribers[channel]
                    del self._confirmed[channel]
                    raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="claude-queue-fanout")
            confirmed = self._confirmed[channel]
        try:
            # Not asyncio.wait_for, which on Python 3.11 can drop a cancellation (see
            # shared/tasks.py).
            async with asyncio.timeout(_CONFIRM_TIMEOUT_S):
                await confirmed.wait()
        except TimeoutError:
            await self.close(subscription)
            raise redis.TimeoutError(
                f"Redis did not confirm the subscription to {channel}"
            ) from None
        except BaseException:
            # Cancelled meanwhile (its caller went away, e.g. an HTTP client): not followed
            # after all. Left registered, its channel stayed subscribed and its queue
            # filled up for the client's whole life. Shielded: a second cancel cannot
            # stop the cleanup halfway.
            await asyncio.shield(self.close(subscription))
            raise
        return subscription

    async def close(self, subscription: Subscription) -> None:
        async with self._lock:
            followers = self._subscribers.get(subscription.channel)
            if followers is None or subscription not in followers:
                return
            followers.discard(subscription)
            if not followers:
                del self._subscribers[subscription.channel]
                self._confirmed.pop(subscription.channel, None)
                with contextlib.suppress(redis.RedisError):
                    await self._pubsub.unsubscribe(subscription.channel)

    async def aclose(self) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        await self._pubsub.aclose()

    async def _read(self) -> None:
        delays = self._backoff.delays()
        while True:
            try:
                if self._broken:
                    raise redis.ConnectionError("the last reconnect did not subscribe")
                message = await self._pubsub.get_message(timeout=1.0)
                delays.reset()
                if message is not None:
                    self._dispatch(message)
                    # What came in the same socket reads, without a call per message.
                    for reply in pubsubread.buffered(self._pubsub):
                        if isinstance(reply, pubsubread.Published):
                            self._deliver(reply.channel, reply.data)
                        else:
                            self._dispatch(await self._pubsub.handle_message(reply))  # type: ignore[no-untyped-call]
            except (redis.ConnectionError, redis.TimeoutError, RuntimeError) as exc:
                delay = next(delays)
                log.warning("fanout_connection_lost", error=str(exc), retry_in_s=delay)
                await self._reconnect(delay)

    def _dispatch(self, message: dict[str, object] | None) -> None:
        if message is None:
            return
        channel = message.get("channel")
        kind = message.get("type")
        if kind == "subscribe":
            confirmed = self._confirmed.get(_text(channel))
            if confirmed is not None:
                confirmed.set()
        elif kind == "message":
            data = message.get("data")
            assert isinstance(data, bytes)
            self._deliver(channel, data)

    def _deliver(self, channel: object, data: bytes) -> None:
        followers = self._subscribers.get(_text(channel))
        if not followers:
            return
        live = LiveMessage(data)
        for subscription in followers:
            try:
                subscription.queue.put_nowait(live)
            except asyncio.QueueFull:
                subscription.lagging = True  # it catches up from the log

    async def _reconnect(self, delay: float) -> None:
        """Tell every stream it lost messages, then subscribe again on a new connection."""
        async with self._lock:
            for followers in self._subscribers.values():
                for subscription in followers:
                    _put_lost(subscription)
            with contextlib.suppress(redis.RedisError):
                await self._pubsub.aclose()
            await asyncio.sleep(delay)
            self._pubsub = self._client.pubsub()
            for channel in self._subscribers:
                self._confirmed[channel] = asyncio.Event()
            self._broken = False
            if self._subscribers:
                try:
                    await self._pubsub.subscribe(*self._subscribers)
                except (redis.RedisError, OSError):
                    self._broken = True  # the reader tries again, with backoff


def _put_lost(subscription: Subscription) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        subscription.queue.put_nowait(LOST)
        return
    subscription.lagging = True


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
