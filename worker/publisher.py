"""Batches a run's events into the session log and channel, through RunStore.append.

If Redis goes away mid-run, events wait in a bounded in-memory buffer, in order,
and are written when it is back; seq is assigned only when written, and a write
retried after a lost reply is de-duplicated by its run-local index.

Events are buffered as they are parsed and written by `flush()` in one Lua call
per batch (seq assignment, XADD and PUBLISH together). The runner flushes after
each read from the CLI, so a burst becomes a few large batches while a trickle
goes out line by line with no added wait.

Two byte limits keep one run from filling Redis. An event over `max_event_bytes`
has its longest strings cut, each ending with a `…[truncated N bytes]` marker
(worker/truncate.py); only if that cannot make it fit is it replaced by an
`event_too_large` error. Once a run's log budget is set (`limit_run_log`), an
ordinary event that would take the run past it raises LogBudgetExceeded instead of
being queued; closing events (those written with a final status) always go out,
in headroom kept back for them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import redis
import structlog

from shared.backoff import retry_backoff
from shared.encode import (
    EncodedEvent,
    data_json,
    encode_with_header,
    envelope_header,
    seq_prefix,
)
from shared.events import ErrorCode, ErrorData, Event, EventType, RunStatus
from shared.runstore import RunStore
from worker.truncate import truncate_json

log = structlog.get_logger(__name__)

_MAX_BATCH_EVENTS = 2000
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_TOUCH_EVERY_S = 60.0
# What an event costs in the log beyond its body: Redis puts '{"seq":N,' in front
# (up to 27 bytes) and its stream node adds a few dozen more. Counted generously, so
# that an entry of max_event_bytes also fits an allocation of that size: Redis'
# allocator rounds a block just over 1 MiB up to 1.25 MiB.
_ENTRY_OVERHEAD_BYTES = 128
# Kept back from a run's log budget for its closing events (error + finished).
_CLOSING_HEADROOM_BYTES = 64 * 1024
_SHRINK_ATTEMPTS = 3


class BufferOverflow(RuntimeError):
    """Redis stayed away while more events piled up than the buffer may hold."""


class LogBudgetExceeded(RuntimeError):
    """The run's next event would take its session log past the run's byte budget."""


class OwnershipLost(RuntimeError):
    """Redis refused our events: the run was finished, or its lease passed to someone else."""


class PublishMeter(Protocol):
    """What metrics hear from a publisher (worker/metrics.py RunMeter)."""

    def added(self, event: Event) -> None: ...
    def written(self, types: Sequence[str]) -> None: ...
    def buffered(self, total_bytes: int) -> None: ...


class Publisher:
    """Buffers and publishes one run's events, in order, exactly once each."""

    def __init__(
        self,
        store: RunStore,
        *,
        session_id: str,
        run_id: str,
        token: str,
        max_event_bytes: int,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        retry_for_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._run_id = run_id
        self._token = token
        self._max_event_bytes = max_event_bytes
        self._retry_for_s = retry_for_s
        self._clock = clock
        self._header = envelope_header(session_id, run_id)
        self._touched_at = -math.inf
        self._pending: deque[tuple[int, bytes, int, str]] = deque()  # index, body, bytes, type
        self._next_index = 1
        self._buffered_bytes = 0
        self._logged_bytes = 0
        self._log_budget: float = math.inf
        self._headroom = 0
        self._max_buffer_bytes = max_buffer_bytes
        self._down_since: float | None = None
        self._next_attempt = 0.0
        # Jittered, so workers that lost Redis together do not all retry at one instant.
        self._delays = retry_backoff(store.settings).delays()
        self.published = 0
        self.last_seq = 0
        self._meter: PublishMeter | None = None

    def attach(self, meter: PublishMeter) -> None:
        """Tell `meter` about every event queued and written from now on."""
        self._meter = meter

    def limit_run_log(self, max_bytes: int) -> None:
        """Cap what this run writes to its log; ordinary events past it are refused."""
        self._log_budget = max_bytes
        self._headroom = min(_CLOSING_HEADROOM_BYTES, max_bytes // 4)

    @property
    def logged_bytes(self) -> int:
        """Bytes this run's events take in the session log, overhead generously counted."""
        return self._logged_bytes

    def add(self, event: Event | EncodedEvent, *, closing: bool = False) -> None:
        """Queue an event; it is written at the next flush.

        Raises LogBudgetExceeded, queuing nothing, if the event is not `closing` and
        would take the run past its log budget less the closing headroom.
        """
        ts = self._clock()
        body = self._encode(event, ts)
        size = len(body) + _ENTRY_OVERHEAD_BYTES
        if size > self._max_event_bytes:
            body = self._shrink(event, ts, size)
            size = len(body) + _ENTRY_OVERHEAD_BYTES
        allowed = self._log_budget - self._headroom
        if not closing and self._logged_bytes + size > allowed:
            raise LogBudgetExceeded(
                f"the run wrote {self._logged_bytes} bytes to its session log and its next "
                f"{event.type.value} event of {size} bytes would pass the "
                f"{self._log_budget}-byte limit (CLAUDE_QUEUE_MAX_RUN_LOG_BYTES)"
            )
        self._logged_bytes += size
        self._pending.append((self._next_index, body, size, event.type.value))
        self._buffered_bytes += size
        self._next_index += 1
        if self._meter is not None and isinstance(event, Event):  # (a stream event tells none)
            self._meter.added(event)

    def _encode(self, event: Event | EncodedEvent, ts: float) -> bytes:
        try:
            return encode_with_header(self._header, ts, event)
        except (ValueError, RecursionError) as exc:  # e.g. nesting past the serializer's depth
            unencodable = ErrorData(
                code=ErrorCode.CLI_ERROR,
                message=f"a {event.type.value} event could not be encoded and was dropped: {exc}",
                detail={"event_type": event.type.value},
            )
            return encode_with_header(
                self._header, ts, Event(type=EventType.ERROR, data=unencodable)
            )

    def _shrink(self, event: Event | EncodedEvent, ts: float, size: int) -> bytes:
        """The event with its longest strings truncated to fit, else an event_too_large error."""
        if isinstance(event, EncodedEvent):
            event = event.decoded()
        value = event.data.model_dump(mode="json")
        # What the envelope adds around `data`, as pydantic encodes it.
        overhead = size - len(data_json(event.data))
        target = self._max_event_bytes - overhead
        for _ in range(_SHRINK_ATTEMPTS):
            cut = truncate_json(value, target)
            if not cut.fits or not cut.cut_strings:
                break
            try:
                data = type(event.data).model_validate(cut.value)
                body = encode_with_header(self._header, ts, Event(type=event.type, data=data))
            except ValueError:  # a cut string broke the model (pydantic errors are ValueErrors)
                break
            new_size = len(body) + _ENTRY_OVERHEAD_BYTES
            if new_size <= self._max_event_bytes:
                log.warning(
                    "event_truncated",
                    event_type=event.type.value,
                    bytes=size,
                    cut_strings=cut.cut_strings,
                    cut_bytes=cut.cut_bytes,
                )
                return body
            # Our JSON sizing and pydantic's differ slightly (e.g. floats): aim lower.
            target -= new_size - self._max_event_bytes
        oversized = ErrorData(
            code=ErrorCode.EVENT_TOO_LARGE,
            message=f"a {event.type.value} event of {size} bytes was over the "
            f"{self._max_event_bytes}-byte limit (CLAUDE_QUEUE_MAX_EVENT_BYTES) even with "
            "its text fields truncated; it was dropped",
            detail={"event_type": event.type.value, "bytes": size},
        )
        return encode_with_header(self._header, ts, Event(type=EventType.ERROR, data=oversized))

    def publish(self, *events: Event, final_status: RunStatus | None = None) -> None:
        """Add events and write them now, waiting out a Redis outage if need be."""
        for event in events:
            self.add(event, closing=final_status is not None)
        self.flush(final_status=final_status, wait=True)

    def flush(self, *, final_status: RunStatus | None = None, wait: bool = False) -> None:
        """Write everything buffered; with final_status, also close the run atomically.

        While Redis is unreachable a plain flush keeps the events (in order, seq not
        yet assigned) and returns, so the CLI keeps being read; it retries with
        backoff on later flushes. `wait=True` (and any final flush) blocks until
        written or `retry_for_s` passes. Raises BufferOverflow past the buffer limit.
        """
        wait = wait or final_status is not None
        if self._meter is not None:
            # What add() queued since the last flush, told once: a gauge change is a
            # multiprocess file write, ~1.7 us, paid per event before. A scrape between
            # a chunk's parse and its flush sees the chunk a moment later.
            self._meter.buffered(self._buffered_bytes)
        if not wait and time.monotonic() < self._next_attempt:
            self._check_buffer()
            return
        deadline = time.monotonic() + self._retry_for_s
        while True:
            try:
                self._drain(final_status)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = self._note_outage(exc)
                if not wait:
                    self._check_buffer()
                    return
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                continue
            if self._down_since is not None:
                log.info("redis_back", outage_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = None
            self._delays.reset()
            self._next_attempt = 0.0
            return

    def _note_outage(self, exc: Exception) -> float:
        """Note a failed write; returns how long to wait before the next attempt."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("redis_unreachable_buffering", error=str(exc))
        delay = next(self._delays)
        self._next_attempt = now + delay
        return delay

    def _check_buffer(self) -> None:
        if self._buffered_bytes > self._max_buffer_bytes:
            raise BufferOverflow(
                f"{self._buffered_bytes} bytes of events waited for Redis, over the "
                f"{self._max_buffer_bytes}-byte limit (CLAUDE_QUEUE_PUBLISH_BUFFER_BYTES)"
            )

    def _drain(self, final_status: RunStatus | None) -> None:
        while True:
            batch: list[tuple[int, bytes]] = []
            types: list[str] = []
            size = 0
            for index, body, body_size, event_type in self._pending:
                if len(batch) >= _MAX_BATCH_EVENTS or size >= _MAX_BATCH_BYTES:
                    break
                batch.append((index, body))
                types.append(event_type)
                size += body_size
            last_batch = len(batch) == len(self._pending)
            status = final_status if last_batch else None
            if batch or status is not None:
                self._write(batch, status)
            # Only now, with the batch safely written, drop it from the buffer.
            for _ in batch:
                self._pending.popleft()
            self._buffered_bytes -= size
            if self._meter is not None and batch:
                self._meter.written(types)
                self._meter.buffered(self._buffered_bytes)
            if last_batch:
                return

    def _write(self, batch: list[tuple[int, bytes]], final_status: RunStatus | None) -> None:
        first_index = batch[0][0] if batch else self._next_index
        # Expiry and the session index are refreshed on the first write, the last,
        # and once a minute: not on every event (most of a small write's Redis CPU).
        now = time.monotonic()
        touch = final_status is not None or now - self._touched_at > _TOUCH_EVERY_S
        # The seqs these will get if no other writer wrote to the session since our last
        # write: then Redis logs them as they are (the append script says why).
        hint = self.last_seq + 1 if self.last_seq else 0
        if hint:
            bodies = [seq_prefix(hint + i) + body for i, (_, body) in enumerate(batch)]
        else:
            bodies = [body for _, body in batch]
        written = self._store.append(
            self._session_id,
            self._run_id,
            token=self._token,
            first_index=first_index,
            bodies=bodies,
            final_status=final_status,
            touch=touch,
            now=self._clock(),
            seq_hint=hint,
        )
        if touch:
            self._touched_at = now
        if not written.accepted:
            raise OwnershipLost(f"run {self._run_id} is no longer ours to publish to")
        self.published += len(batch)
        if written.last_seq:
            self.last_seq = written.last_seq
