"""One SSE client of a session hub: its replay, its bounded buffer, its stopping point.

The response joins the session's hub (`Hubs.join`) before it starts, then writes what
`chunks()` yields: the client attaches to the hub at the hub's position P, replays
(after, P] from the log itself (one page at a time, as fast as the client takes it),
then writes the live frames the hub offered meanwhile and after: every frame already
queued in one write, up to BATCH. Nothing waits for more frames than are there.

Bounds. The hub appends a live frame to the client's buffer only while it holds fewer
than `capacity`. A full buffer whose client has a write blocked (the client does not
read fast enough) drops the client: its connection is closed at once, what it had not
received let go; its reconnect with Last-Event-ID replays from the log. A buffer that
fills while its writer is not blocked (it is reading the log for its replay, or has
not had its turn) is let go instead, the client detached, and its writer catches up
from the log up to the hub's new position before it attaches again. So the server
holds at most `capacity` frames per client, plus the chunk being written and one
replay page, whatever the client does.

A stream bound to one run (`until=finished` and `run_id`) checks, right after its
replay and then whenever it has been idle PROBE_INTERVAL_S, that the session still
exists: one that was deleted or expired ends the stream instead of leaving it open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator

import redis
import structlog

from gateway.hub import Hubs, SessionHub
from gateway.sse import SseStats, encode_frame
from producer.cursor import SeqCursor
from producer.streamloop import PROBE_INTERVAL_S
from shared.events import Envelope, EventType
from shared.forwarded import Forwarded

log = structlog.get_logger(__name__)

# Frames in one write at most (a replay's chunk, or what the buffer holds), and at most
# half the buffer, so the other half can fill while a write is under way.
BATCH = 64


class HubFeed:
    """What one SSE client receives: replay up to the hub's position, then live frames."""

    def __init__(
        self,
        hubs: Hubs,
        *,
        stats: SseStats,
        session_id: str,
        after: int = 0,
        stop_at_finish: bool = False,
        run_id: str | None = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.stats = stats
        self.session_id = session_id
        self.dropped = asyncio.Event()
        self._hubs = hubs
        self._after = after
        self._run_id = run_id
        self._stop_at_finish = stop_at_finish
        self._capacity = stats.capacity
        self._batch = max(1, min(BATCH, self._capacity // 2))
        self._probe_interval_s = probe_interval_s
        self._hub: SessionHub | None = None
        self._buffer: deque[tuple[int, bytes]] = deque()  # (seq, frame)
        self._floor = after  # live envelopes at or below this seq are not for this client
        self._stop_seq: int | None = None  # the stopping point, once it was offered
        self._hub_ended = False
        self._lagged = False  # a buffer behind: frames let go, catch up from the log
        self._sending = False  # a chunk is out and its write has not completed
        self._waiter: asyncio.Future[None] | None = None

    @property
    def run_bound(self) -> bool:
        return self._stop_at_finish and self._run_id is not None

    # -- the response's side -------------------------------------------------------------

    def join(self) -> None:
        """Become a member of the session's hub (before the response starts)."""
        if self._hub is None:
            self._hub = self._hubs.join(self.session_id)

    def leave(self) -> None:
        """Leave the hub (once); the last member out stops it."""
        hub, self._hub = self._hub, None
        if hub is not None:
            self._hubs.leave(hub, self)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The bytes to write: replay chunks, then live ones; ends at the stopping point."""
        self.join()
        hub = self._hub
        assert hub is not None
        if not await hub.started():
            return
        cursor = SeqCursor(self._after, self._stop_at_finish, self._run_id)
        probe_due = self.run_bound
        while True:
            catch_up = self._catch_up(hub, cursor)  # attach, then replay up to the seam
            try:
                async for chunk in catch_up:
                    self._sending = True
                    yield chunk
                    self._sending = False
            finally:
                await catch_up.aclose()
            if cursor.done:
                return
            while not self._lagged or self.dropped.is_set():  # live
                if self.dropped.is_set():
                    # The response closes the connection (FeedResponse cancels this
                    # wait): the client must see a cut stream, not one that ended.
                    await asyncio.Event().wait()
                if self._buffer:
                    seq, chunk = self._take()
                    cursor.last_seq = seq
                    self._sending = True
                    yield chunk
                    self._sending = False
                    if seq == self._stop_seq:
                        return
                    continue
                if self._hub_ended:
                    return
                if probe_due and not await self._session_lives(max(cursor.last_seq, self._floor)):
                    return
                probe_due = await self._wait() is False
            if hub.ended:
                return  # nothing to catch up to: the client reconnects

    async def _catch_up(self, hub: SessionHub, cursor: SeqCursor) -> AsyncGenerator[bytes, None]:
        position = self._attach(hub, cursor.last_seq)  # synchronous: the seam
        if cursor.last_seq < position:
            replay = self._replay(cursor, position)
            try:
                async for chunk in replay:
                    yield chunk
            finally:
                await replay.aclose()

    def _take(self) -> tuple[int, bytes]:
        """What the buffer holds (up to BATCH frames) as one chunk, and its last seq."""
        buffer = self._buffer
        take = min(len(buffer), self._batch)
        if take == 1:
            return buffer.popleft()
        items = [buffer.popleft() for _ in range(take)]
        return items[-1][0], b"".join([frame for _, frame in items])

    def _attach(self, hub: SessionHub, last_seq: int) -> int:
        """(Re)attach at the hub's position, with an empty buffer; returns the position."""
        position = hub.attach(self)
        self._floor = max(last_seq, position)
        self._buffer.clear()
        self._lagged = False
        self._stop_seq = None
        return position

    async def _replay(self, cursor: SeqCursor, upto: int) -> AsyncGenerator[bytes, None]:
        """The log's frames in (after, upto], in chunks of up to BATCH frames."""
        frames: list[bytes] = []
        source = self._hubs.source.replay(self.session_id, cursor.last_seq)
        try:
            async for envelope in source:
                if envelope.seq > upto:
                    break
                if envelope.seq <= cursor.last_seq:
                    continue
                cursor.delivered(envelope)
                if self._run_id is None or envelope.run_id == self._run_id:
                    frames.append(encode_frame(envelope))
                if cursor.done:
                    break
                if len(frames) >= self._batch:
                    yield b"".join(frames)
                    frames = []
        finally:
            await _aclose(source)
        if frames:
            yield b"".join(frames)

    async def _wait(self) -> bool:
        """Until the hub offers a frame or ends (True); False if a run-bound stream
        waited PROBE_INTERVAL_S for nothing (time to check its session)."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            if not self.run_bound:
                await waiter
                return True
            try:
                async with asyncio.timeout(self._probe_interval_s):
                    await waiter
            except TimeoutError:
                return False
            return True
        finally:
            self._waiter = None

    async def _session_lives(self, seen: int) -> bool:
        """False (after a log line) if the session is gone: this run's finished never
        comes. A failed read says nothing: the next idle period asks again."""
        try:
            last = await self._hubs.source.last_seq(self.session_id)
        except (redis.ConnectionError, redis.TimeoutError):
            return True
        if last is not None and last >= seen:
            return True
        log.info(
            "sse_stream_ended",
            session_id=self.session_id,
            reason=f"session {self.session_id} was deleted or expired before run "
            f"{self._run_id} finished (last seq seen: {seen})",
        )
        return False

    # -- the hub's side ------------------------------------------------------------------

    def offer(self, envelope: Envelope, frame: bytes) -> bool:
        """A live envelope and its frame; False: detach this client (done or dropped)."""
        seq = envelope.seq
        if seq <= self._floor:
            return True
        self._floor = seq
        if self._run_id is not None and envelope.run_id != self._run_id:
            return True
        buffer = self._buffer
        if len(buffer) >= self._capacity:
            if self._sending:  # its write is blocked: the client does not keep up
                self._drop(seq)
            else:  # its writer reads the log (a replay), or has not had its turn yet
                self._fall_behind()
            return False
        buffer.append((seq, frame))
        self.stats.high_water = max(self.stats.high_water, len(buffer))
        self._wake()
        if self._stop_at_finish and envelope.type is EventType.FINISHED:
            self._stop_seq = seq
            return False
        return True

    def _fall_behind(self) -> None:
        """A buffer behind: let its frames go; it catches up from the log."""
        self._buffer.clear()
        self._lagged = True
        self._wake()

    def end(self) -> None:
        """The hub ended: write what is buffered, then end the response."""
        self._hub_ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop(self, seq: int) -> None:
        self.stats.dropped += 1
        log.warning(
            "sse_client_dropped",
            session_id=self.session_id,
            capacity=self._capacity,
            next_seq=seq,
            note="the client read too slowly; its connection is closed and its reconnect "
            "(Last-Event-ID) resumes from the session log",
        )
        self._buffer.clear()
        self.dropped.set()


async def _aclose(source: AsyncIterator[Envelope | Forwarded]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
