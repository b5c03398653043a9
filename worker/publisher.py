"""The only writer of a run's events: batches them into the session log and channel.

Events are buffered as they are parsed and written by `flush()` in one Lua call
per batch (seq assignment, XADD and PUBLISH together). The runner flushes after
each read from the CLI, so a burst becomes a few large batches while a trickle
goes out line by line with no added wait.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import redis
import structlog

from shared.events import ErrorCode, ErrorData, Event, EventType, RunStatus, encode_body
from shared.keys import Keys
from shared.store import PUBLISH_LUA, LogLimits

log = structlog.get_logger(__name__)

_MAX_BATCH_EVENTS = 2000
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


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
        retry_for_s: float = 30.0,
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
        self._pending: deque[tuple[int, str]] = deque()
        self._next_index = 1
        self.published = 0
        self.last_seq = 0

    def add(self, event: Event) -> None:
        """Queue an event; it is written at the next flush."""
        body = encode_body(self._session_id, self._run_id, self._clock(), event)
        if len(body) > self._max_event_bytes:
            oversized = ErrorData(
                code=ErrorCode.EVENT_TOO_LARGE,
                message=f"a {event.type.value} event of {len(body)} bytes was over the "
                f"{self._max_event_bytes}-byte limit (CLAUDE_QUEUE_MAX_EVENT_BYTES); "
                "it was dropped",
                detail={"event_type": event.type.value, "bytes": len(body)},
            )
            replacement = Event(type=EventType.ERROR, data=oversized)
            body = encode_body(self._session_id, self._run_id, self._clock(), replacement)
        self._pending.append((self._next_index, body))
        self._next_index += 1

    def publish(self, *events: Event, final_status: RunStatus | None = None) -> None:
        """Add events and flush them now."""
        for event in events:
            self.add(event)
        self.flush(final_status=final_status)

    def flush(self, *, final_status: RunStatus | None = None) -> None:
        """Write everything buffered; with final_status, also close the run atomically."""
        while self._pending or final_status is not None:
            batch: list[tuple[int, str]] = []
            size = 0
            while self._pending and len(batch) < _MAX_BATCH_EVENTS and size < _MAX_BATCH_BYTES:
                index, body = self._pending[0]
                batch.append((index, body))
                size += len(body)
                self._pending.popleft()
            last_batch = not self._pending
            status = final_status.value if (final_status is not None and last_batch) else ""
            self._write(batch, status)
            if last_batch:
                return

    def _write(self, batch: list[tuple[int, str]], final_status: str) -> None:
        first_index = batch[0][0] if batch else self._next_index
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
            *(body for _, body in batch),
        ]
        deadline = time.monotonic() + self._retry_for_s
        delay = _RETRY_FIRST_S
        while True:
            try:
                seq = int(self._script(keys=self._keys, args=args))
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("publish_retry", error=str(exc), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        if seq < 0:
            raise OwnershipLost(f"run {self._run_id} is no longer ours to publish to")
        self.published += len(batch)
        if seq:
            self.last_seq = seq
