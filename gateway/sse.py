"""The event stream of one SSE client, with a bounded buffer.

A reader task follows the session through `AsyncClient.stream` (subscribe, replay,
follow: no gap, no duplicate, seq order) and puts each envelope on the client's
buffer; the response takes them off and writes `id: <seq>`, `event: <type>`,
`data: <envelope JSON>` frames. Every frame already queued goes out in one write (a
replay is written in chunks, not frame by frame); nothing waits for more. A client
that stops reading stops the writer (the socket's send buffer fills), so its buffer
fills: once it holds `capacity` events the client is dropped. Its connection is
closed at once, what it had not received is let go, and its reconnect
(Last-Event-ID) replays from the log. The server holds at most `capacity` events per
client, plus the one chunk being written, whatever the client does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Final

import anyio
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from producer.errors import StreamEnded
from shared.events import Envelope

log = structlog.get_logger(__name__)

_END: Final = None  # queued by the reader when the stream is over
_CLEANUP_S = 10.0  # longest wait for a stopped reader to leave its subscription
# In a replay page (envelopes the source yields without awaiting anything) the reader
# lets the writer run once this many events wait (or capacity // 2, if smaller), and
# the writer writes up to as many at once. A live event is written as it arrives.
_BATCH = 64
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)
class SseStats:
    """This process's streams; reported by GET /v1/status."""

    capacity: int
    open: int = 0
    dropped: int = 0
    high_water: int = 0


class ClientFeed:
    """One client's stream: a reader fills a bounded buffer, the response drains it."""

    def __init__(
        self,
        source: AsyncIterator[Envelope],
        *,
        stats: SseStats,
        session_id: str,
        run_id: str | None = None,
    ) -> None:
        self._source = source
        self.stats = stats
        self._capacity = stats.capacity
        self._session_id = session_id
        self._run_id = run_id
        # Bounded by the reader (capacity events, plus the end marker), not by the queue.
        self._buffer: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self.dropped = asyncio.Event()
        self._writing = asyncio.Event()
        self._batch = max(1, min(_BATCH, self._capacity // 2))
        self._ended = False  # the writer took the end marker
        self._turn = 0  # the last request to the source during which the loop ran

    async def read(self) -> None:
        """The reader task: follow the session until its stopping point or a drop."""
        # Only once the writer takes frames: a buffer that fills before is no slow client.
        await self._writing.wait()
        loop = asyncio.get_running_loop()
        asked = 0
        try:
            while True:
                asked += 1
                loop.call_soon(self._note_turn, asked)  # runs only if the source awaits
                try:
                    envelope = await self._source.__anext__()
                except StopAsyncIteration:
                    break
                if self._run_id is not None and envelope.run_id != self._run_id:
                    continue
                if self._buffer.qsize() >= self._capacity:
                    self._drop(envelope.seq)
                    return
                self._buffer.put_nowait(envelope)
                queued = self._buffer.qsize()
                self.stats.high_water = max(self.stats.high_water, queued)
                # The writer's turn, so a client that reads keeps up: after each event
                # the source waited for (live), and once a batch waits (a replay page).
                if self._turn == asked or queued >= self._batch:
                    await asyncio.sleep(0)
        except StreamEnded as exc:  # a run-bound stream whose session was deleted
            log.info("sse_stream_ended", session_id=self._session_id, reason=str(exc))
        except Exception:
            log.exception("sse_reader_failed", session_id=self._session_id)
        finally:
            await _aclose(self._source)
        self._buffer.put_nowait(_END)

    def _note_turn(self, asked: int) -> None:
        self._turn = asked

    def _drop(self, seq: int) -> None:
        self.stats.dropped += 1
        log.warning(
            "sse_client_dropped",
            session_id=self._session_id,
            buffered=self._buffer.qsize(),
            capacity=self._capacity,
            next_seq=seq,
            note="the client read too slowly; its connection is closed and its reconnect "
            "(Last-Event-ID) resumes from the session log",
        )
        self.dropped.set()

    async def next_batch(self) -> list[Envelope] | None:
        """The envelopes queued when the writer looks, in seq order; None at the end."""
        self._writing.set()
        if self._ended or (envelope := await self._buffer.get()) is _END:
            self._ended = True
            return None
        batch = [envelope]
        # What is already there (one chunk at most): never wait for more.
        while len(batch) < self._batch and not self._buffer.empty():
            if (envelope := self._buffer.get_nowait()) is _END:
                self._ended = True
                break
            batch.append(envelope)
        return batch

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """What the response writes: the frames of each batch, as one chunk."""
        while (batch := await self.next_batch()) is not None:
            if len(batch) == 1:
                yield encode_frame(batch[0])
            else:
                yield b"".join([encode_frame(envelope) for envelope in batch])

    async def frames(self) -> AsyncGenerator[ServerSentEvent, None]:
        """The same stream one frame at a time."""
        while (batch := await self.next_batch()) is not None:
            for envelope in batch:
                yield ServerSentEvent(
                    data=envelope.to_json(), event=str(envelope.type), id=str(envelope.seq)
                )


def encode_frame(envelope: Envelope) -> bytes:
    """`id: <seq>`, `event: <type>`, `data: <envelope JSON>`: ServerSentEvent's bytes."""
    data = envelope.to_json()  # the JSON it was read from: decoded once, never re-encoded
    event = str(envelope.type)
    if _LINE_BREAK.search(event) or _LINE_BREAK.search(data):  # never from JSON; be safe
        sse = ServerSentEvent(data=data, event=event, id=str(envelope.seq))
        return sse.encode()
    return f"id: {envelope.seq}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


class FeedResponse(EventSourceResponse):
    """An EventSourceResponse that runs its feed's reader, and ends when the feed drops it."""

    def __init__(self, feed: ClientFeed, *, heartbeat_s: float) -> None:
        super().__init__(
            feed.chunks(),
            ping=heartbeat_s,
            ping_message_factory=_heartbeat,
        )
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":  # headers only: no stream, no reader
            await super().__call__(scope, receive, send)
            return
        stats = self._feed.stats
        stats.open += 1
        # A plain asyncio task, cancelled once: the client's stream then unsubscribes
        # and closes as asyncio code expects (an anyio scope would cancel every await
        # of that cleanup too).
        reader = asyncio.create_task(self._feed.read(), name="claude-queue-sse-reader")
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._close_when_dropped, group.cancel_scope)
                await super().__call__(scope, receive, send)
                group.cancel_scope.cancel()  # the client left, or the stream is over
        finally:
            stats.open -= 1
            reader.cancel()
            with anyio.move_on_after(_CLEANUP_S, shield=True):
                await asyncio.gather(reader, return_exceptions=True)

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


async def _aclose(source: AsyncIterator[Envelope]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
