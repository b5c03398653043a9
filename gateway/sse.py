"""SSE frames, the stream counters, and the response that writes one client's feed.

Each client's feed (gateway/feed.py) is served by its session's hub (gateway/hub.py):
one stream loop per session per process, frames encoded once. The response joins
the hub before it starts and leaves it when it ends, however it ends; a client
dropped for falling behind has its connection closed at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from shared.events import Envelope
from shared.forwarded import Forwarded

if TYPE_CHECKING:
    from gateway.feed import HubFeed

_CLEANUP_S = 10.0  # longest wait for a stopped feed's replay to close its stream


@dataclass(slots=True)
class SseStats:
    """This process's streams; reported by GET /v1/status."""

    capacity: int
    open: int = 0
    dropped: int = 0
    high_water: int = 0


def encode_frame(envelope: Envelope | Forwarded) -> bytes:
    """`id: <seq>`, `event: <type>`, `data: <envelope JSON>`: ServerSentEvent's bytes."""
    data = envelope.to_json()  # the JSON it was read from: decoded once, never re-encoded
    event = str(envelope.type)
    # A line break (CR or LF: SSE ends a line at either) never comes from JSON, but the
    # type may be any string a newer worker wrote. `in` scans, not a regex: the regex
    # search over each frame's data was an eighth of an SSE replay's CPU.
    if "\n" in event or "\r" in event or "\n" in data or "\r" in data:
        sse = ServerSentEvent(data=data, event=event, id=str(envelope.seq))
        return sse.encode()
    return f"id: {envelope.seq}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


class FeedResponse(EventSourceResponse):
    """An EventSourceResponse of one client's feed, closed at once when the feed drops it."""

    def __init__(self, feed: HubFeed, *, heartbeat_s: float) -> None:
        self._chunks = feed.chunks()
        super().__init__(self._chunks, ping=heartbeat_s, ping_message_factory=_heartbeat)
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":  # headers only: no stream, no hub
            await self._chunks.aclose()
            await super().__call__(scope, receive, send)
            return
        stats = self._feed.stats
        stats.open += 1
        self._feed.join()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._close_when_dropped, group.cancel_scope)
                await super().__call__(scope, receive, send)
                group.cancel_scope.cancel()  # the client left, or the stream is over
        finally:
            stats.open -= 1
            self._feed.leave()
            with anyio.move_on_after(_CLEANUP_S, shield=True):
                await self._chunks.aclose()  # a replay under way closes its stream

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        # No send timeout is set (a stalled client is dropped by its buffer instead), so
        # skip the cancel scope sse-starlette opens around every send: ~5% of the
        # gateway's CPU per frame with 1,000 clients. Its bookkeeping is kept.
        if self.send_timeout is not None:
            await super()._send_with_timeout(send, message)
            return
        try:
            await send(message)
        except BaseException:
            self._send_interrupted = True
            raise

    async def _close_when_dropped(self, scope: anyio.CancelScope) -> None:
        # Cancelling stops a write blocked on the slow client; the response is left
        # incomplete, so the server closes the connection.
        await self._feed.dropped.wait()
        scope.cancel()


def _heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")
