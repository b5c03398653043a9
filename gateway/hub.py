"""One live stream per session per gateway process, fanned out to its SSE clients.

A `SessionHub` follows its session through `AsyncClient.stream` (subscribe, replay,
follow: no gap, no duplicate, seq order, reconnects), encodes each envelope's SSE
frame once, and offers it to every client attached to it (`HubFeed.offer`: a filter,
a bounded buffer append, a wake-up). A client's cost per frame is that, plus its own
write; the stream loop, the pub/sub queue and the frame's encoding are paid once per
session, whatever the number of clients.

The seam. A hub starts at the session's last seq L (read before it subscribes, so
the hub's stream delivers every event after L: its replay covers what was published
before its subscription took). Its `position` is the seq of the last envelope it
offered, updated in the same step as the offers. A client attaches in one
synchronous step (nothing else runs in between): from then on it is offered every
envelope after `position`, P. What it asked for at or before P, (after, P], it reads
from the log (and archive) itself, while the live envelopes after P wait in its
buffer; it writes the replay, then the buffer. So nothing between the two is lost or
sent twice.

The hub is torn down when its last client leaves (its stream is closed, which leaves
the pub/sub channel). A hub whose stream fails ends its clients' streams; they
reconnect with Last-Event-ID, and a new hub is started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import redis
import structlog

from gateway.sse import encode_frame
from producer.aio import AsyncClient
from shared.backoff import Backoff
from shared.events import Envelope
from shared.forwarded import Forwarded
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.feed import HubFeed

log = structlog.get_logger(__name__)


class HubSource(Protocol):
    """Where hubs and their clients read a session (an AsyncClient, see RedisSource)."""

    async def last_seq(self, session_id: str) -> int | None:
        """The session's last seq; None if it has none (never written, deleted)."""
        ...

    def follow(self, session_id: str, after: int) -> AsyncIterator[Envelope]:
        """Every envelope after `after`, then live ones, forever (the hub's stream)."""
        ...

    def replay(self, session_id: str, after: int) -> AsyncIterator[Envelope | Forwarded]:
        """The logged envelopes after `after` (archive included), then the end: only
        written out again, so they may come as Forwarded ones (data not decoded)."""
        ...


class SessionHub:
    """One session's live stream in this process, and the clients attached to it."""

    def __init__(
        self, source: HubSource, session_id: str, backoff: Backoff, pause_every: int = 64
    ) -> None:
        self.session_id = session_id
        self._pause_every = pause_every
        self.position = 0  # the last seq offered to the clients (valid once `started`)
        self.members = 0  # clients that joined and have not left (attached or not yet)
        self.ended = False
        self._feeds: dict[HubFeed, None] = {}  # attached clients, in order of arrival
        self._started = asyncio.Event()
        self._source = source
        self._backoff = backoff
        self.task = asyncio.create_task(self._run(), name=f"claude-queue-hub-{session_id}")

    async def started(self) -> bool:
        """Wait until the hub knows its position; False if it ended first."""
        await self._started.wait()
        return not self.ended

    def attach(self, feed: HubFeed) -> int:
        """Offer `feed` every envelope after the current position, which is returned."""
        assert self._started.is_set() and not self.ended
        self._feeds[feed] = None
        return self.position

    def detach(self, feed: HubFeed) -> None:
        self._feeds.pop(feed, None)

    @property
    def attached(self) -> int:
        return len(self._feeds)

    async def _start_position(self) -> int:
        """The session's last seq now, retried (with backoff) while Redis is away."""
        delays = self._backoff.delays()
        while True:
            try:
                return await self._source.last_seq(self.session_id) or 0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = next(delays)
                log.warning("sse_hub_waiting_for_redis", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _run(self) -> None:
        try:
            self.position = await self._start_position()
            self._started.set()
            stream = self._source.follow(self.session_id, self.position)
            offered = 0
            try:
                async for envelope in stream:
                    self._offer(envelope)
                    offered += 1
                    if offered >= self._pause_every:
                        # A replay page (a gap filled, a reconnect) comes without a pause:
                        # the clients' writers get their turn, so readers keep up.
                        offered = 0
                        await asyncio.sleep(0)
            finally:
                await _aclose(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sse_hub_failed", session_id=self.session_id)
        finally:
            self.ended = True
            self._started.set()
            feeds, self._feeds = self._feeds, {}
            for feed in feeds:
                feed.end()

    def _offer(self, envelope: Envelope) -> None:
        # No await here: a client attaches between two envelopes, never during one.
        self.position = envelope.seq
        if not self._feeds:
            return
        frame = encode_frame(envelope)  # once, for every client
        leaving = [feed for feed in self._feeds if not feed.offer(envelope, frame)]
        for feed in leaving:
            del self._feeds[feed]


class Hubs:
    """This process's hubs, one per followed session; a hub lives while it has members."""

    def __init__(self, source: HubSource, backoff: Backoff, capacity: int) -> None:
        self.source = source
        self._backoff = backoff
        # Offers in a row before the hub lets writers run: half a client's buffer.
        self._pause_every = max(1, min(64, capacity // 2))
        self._hubs: dict[str, SessionHub] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def join(self, session_id: str) -> SessionHub:
        """The session's hub (started if there is none, or it ended); counts a member."""
        hub = self._hubs.get(session_id)
        if hub is None or hub.ended:
            hub = SessionHub(self.source, session_id, self._backoff, self._pause_every)
            self._hubs[session_id] = hub
        hub.members += 1
        return hub

    def leave(self, hub: SessionHub, feed: HubFeed) -> None:
        """A member leaves; the last one out stops the hub (its stream unsubscribes)."""
        hub.detach(feed)
        hub.members -= 1
        if hub.members > 0:
            return
        if self._hubs.get(hub.session_id) is hub:
            del self._hubs[hub.session_id]
        self._stop(hub)

    def __len__(self) -> int:
        return len(self._hubs)

    def get(self, session_id: str) -> SessionHub | None:
        return self._hubs.get(session_id)

    def _stop(self, hub: SessionHub) -> None:
        if hub.task.done():
            return
        # Cancelled until it ends: one cancel can be lost (shared/tasks.py), and a hub
        # that carried on would follow its session for ever and hang `aclose`.
        stopper = asyncio.create_task(cancel_and_wait(hub.task), name=f"{hub.task.get_name()}-stop")
        self._stopping.add(stopper)
        stopper.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        """Stop every hub and wait for their streams to close."""
        for hub in list(self._hubs.values()):
            self._stop(hub)
        self._hubs.clear()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def wait_stopped(self) -> None:
        """Wait for the hubs being stopped to have closed their streams (tests)."""
        if self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)


class RedisSource:
    """A HubSource on the gateway's AsyncClient (the project's own stream loop)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def last_seq(self, session_id: str) -> int | None:
        return await self._client.store.last_seq(session_id)

    def follow(self, session_id: str, after: int) -> AsyncIterator[Envelope]:
        return self._client.stream(session_id, after=after)

    def replay(self, session_id: str, after: int) -> AsyncIterator[Envelope | Forwarded]:
        return self._client.forward(session_id, after=after)


async def _aclose(source: AsyncIterator[Envelope | Forwarded]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
