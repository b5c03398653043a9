"""The only writer of a run's events: batches them into the session log and channel.

If Redis goes away mid-run, events wait in a bounded in-memory buffer, in order,
and are written when it is back; seq is assigned only when written, and a write
retried after a lost reply is de-duplicated by its run-local index.

Events are buffered as they are parsed and written by `flush()` in one Lua call
per batch (seq assignment, XADD and PUBLISH together). The runner flushes after
each read from the CLI, so a burst becomes a few large batches while a trickle
goes out line by line with no added wait.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import redis
import structlog

from shared.events import (
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    RunStatus,
    encode_with_header,
    envelope_header,
)
from shared.keys import Keys
from shared.store import PUBLISH_LUA, LogLimits

log = structlog.get_logger(__name__)

_MAX_BATCH_EVENTS = 2000
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_TOUCH_EVERY_S = 60.0
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


class BufferOverflow(RuntimeError):
    """Redis stayed away while more events piled up than the buffer may hold."""


class OwnershipLost(RuntimeError):
    """Redis refused our events: the run was finished, or its lease passed to someone else."""


class Publisher:
    """Buffers and publishes one run's events, in order, exactly once each."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        limits: LogLimits,
        *,
        session_id: str,
        run_id: str,
        token: str,
        max_event_bytes: int,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        retry_for_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._script = client.register_script(PUBLISH_LUA)
        self._limits = limits
        self._session_id = session_id
        self._run_id = run_id
        self._token = token
        self._max_event_bytes = max_event_bytes
        self._retry_for_s = retry_for_s
        self._clock = clock
        self._keys = [
            keys.run(session_id, run_id),
            keys.seq(session_id),
            keys.log(session_id),
            keys.sessions,
            keys.pending(session_id),
            keys.running,
            keys.lease(session_id),
        ]
        self._channel = keys.channel(session_id)
        self._header = envelope_header(session_id, run_id)
        self._touched_at = -math.inf
        self._pending: deque[tuple[int, str]] = deque()
        self._next_index = 1
        self._buffered_bytes = 0
        self._max_buffer_bytes = max_buffer_bytes
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._retry_delay = _RETRY_FIRST_S
        self.published = 0
        self.last_seq = 0

    def add(self, event: Event) -> None:
        """Queue an event; it is written at the next flush."""
        try:
            body = encode_with_header(self._header, self._clock(), event)
        except (ValueError, RecursionError) as exc:  # e.g. nesting past the serializer's depth
            unencodable = ErrorData(
                code=ErrorCode.CLI_ERROR,
                message=f"a {event.type.value} event could not be encoded and was dropped: {exc}",
                detail={"event_type": event.type.value},
            )
            replacement = Event(type=EventType.ERROR, data=unencodable)
            body = encode_with_header(self._header, self._clock(), replacement)
        if len(body) > self._max_event_bytes:
            oversized = ErrorData(
                code=ErrorCode.EVENT_TOO_LARGE,
                message=f"a {event.type.value} event of {len(body)} bytes was over the "
                f"{self._max_event_bytes}-byte limit (CLAUDE_QUEUE_MAX_EVENT_BYTES); "
                "it was dropped",
                detail={"event_type": event.type.value, "bytes": len(body)},
            )
            replacement = Event(type=EventType.ERROR, data=oversized)
            body = encode_with_header(self._header, self._clock(), replacement)
        self._pending.append((self._next_index, body))
        self._buffered_bytes += len(body)
        self._next_index += 1

    def publish(self, *events: Event, final_status: RunStatus | None = None) -> None:
        """Add events and write them now, waiting out a Redis outage if need be."""
        for event in events:
            self.add(event)
        self.flush(final_status=final_status, wait=True)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def flush(self, *, final_status: RunStatus | None = None, wait: bool = False) -> None:
        """Write everything buffered; with final_status, also close the run atomically.

        While Redis is unreachable a plain flush keeps the events (in order, seq not
        yet assigned) and returns, so the CLI keeps being read; it retries with
        backoff on later flushes. `wait=True` (and any final flush) blocks until
        written or `retry_for_s` passes. Raises BufferOverflow past the buffer limit.
        """
        wait = wait or final_status is not None
        if not wait and time.monotonic() < self._next_attempt:
            self._check_buffer()
            return
        deadline = time.monotonic() + self._retry_for_s
        while True:
            try:
                self._drain(final_status)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._note_outage(exc)
                if not wait:
                    self._check_buffer()
                    return
                if time.monotonic() + self._retry_delay > deadline:
                    raise
                time.sleep(self._retry_delay)
                continue
            if self._down_since is not None:
                log.info("redis_back", outage_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = None
            self._retry_delay = _RETRY_FIRST_S
            self._next_attempt = 0.0
            return

    def _note_outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("redis_unreachable_buffering", error=str(exc))
        else:
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX_S)
        self._next_attempt = now + self._retry_delay

    def _check_buffer(self) -> None:
        if self._buffered_bytes > self._max_buffer_bytes:
            raise BufferOverflow(
                f"{self._buffered_bytes} bytes of events waited for Redis, over the "
                f"{self._max_buffer_bytes}-byte limit (CLAUDE_QUEUE_PUBLISH_BUFFER_BYTES)"
            )

    def _drain(self, final_status: RunStatus | None) -> None:
        while True:
            batch: list[tuple[int, str]] = []
            size = 0
            for index, body in self._pending:
                if len(batch) >= _MAX_BATCH_EVENTS or size >= _MAX_BATCH_BYTES:
                    break
                batch.append((index, body))
                size += len(body)
            last_batch = len(batch) == len(self._pending)
            status = final_status.value if (final_status is not None and last_batch) else ""
            if batch or status:
                self._write(batch, status)
            # Only now, with the batch safely written, drop it from the buffer.
            for _ in batch:
                self._pending.popleft()
            self._buffered_bytes -= size
            if last_batch:
                return

    def _write(self, batch: list[tuple[int, str]], final_status: str) -> None:
        first_index = batch[0][0] if batch else self._next_index
        # Expiry and the session index are refreshed on the first write, the last,
        # and once a minute: not on every event (most of a small write's Redis CPU).
        now = time.monotonic()
        touch = 1 if final_status or now - self._touched_at > _TOUCH_EVERY_S else 0
        args: list[str | int | float] = [
            self._channel,
            self._limits.maxlen,
            self._limits.ttl_s,
            self._clock(),
            self._session_id,
            self._run_id,
            self._token,
            first_index,
            final_status,
            touch,
            *(body for _, body in batch),
        ]
        seq = int(self._script(keys=self._keys, args=args))
        if touch:
            self._touched_at = now
        if seq < 0:
            raise OwnershipLost(f"run {self._run_id} is no longer ours to publish to")
        self.published += len(batch)
        if seq:
            self.last_seq = seq
