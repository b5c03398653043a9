"""The archive drainer: copies finished runs from the Redis outbox into PostgreSQL.

A daemon thread in every worker process (`claude-queue worker`), and the whole of
`claude-queue archiver`. Never on the hot path: runs are queued in the outbox by the
scripts that finish them, and nothing waits on this thread. See shared/archive/drain.py
for the protocol; this module only does its I/O.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import psycopg
import redis
import structlog

from shared.archive import ArchiveStore, OutboxEntry, OutboxError, describe
from shared.archive.drain import (
    OUTBOX_GROUP,
    PRUNE_INTERVAL_S,
    READ_COUNT,
    DrainPlan,
    Source,
    copy_range,
)
from shared.backoff import retry_backoff
from shared.connection import sync_redis
from shared.keys import keys_from
from shared.runstore import REPLAY_PAGE, RunStore
from shared.settings import Settings

log = structlog.get_logger(__name__)

BLOCK_MS = 1000  # longest wait for a new entry; stop requests are seen between
# The worker's drainer thread runs at this nice value (Linux: per thread), so a backlog it
# copies takes CPU only when the runs' processes leave it some (a 2-core host, 120,000
# events queued while a run streams: added write->client p50 +1.73 -> +0.82 ms).
THREAD_NICE = 19


class Archiver:
    """Drains the outbox as consumer `consumer` of the archivers group."""

    def __init__(
        self, settings: Settings, *, consumer: str, connection: redis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.redis = connection or sync_redis(settings)
        self.runs = RunStore(self.redis, settings)
        self.outbox = keys_from(settings).archive_outbox
        self.plan = DrainPlan(claim_every_s=settings.archive_claim_idle_s / 2)
        self.archived_runs = 0
        self._store: ArchiveStore | None = None
        self._group_ready = False
        self._pruned_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- thread ---------------------------------------------------------------

    def start(self) -> Archiver:
        self._thread = threading.Thread(target=self._background, name="archiver", daemon=True)
        self._thread.start()
        return self

    def _background(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # lowering is always allowed
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)
        self.run()

    def request_stop(self) -> None:
        """Make `run` return after its current step (safe from a signal handler)."""
        self._stop.set()

    def stop(self, *, drain_s: float = 0.0) -> None:
        """Stop the thread; with drain_s > 0, first archive what the outbox holds (that long
        at most: what is left stays pending for another drainer)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BLOCK_MS / 1000 + 5)
        if drain_s > 0:
            left = self.drain(deadline=time.monotonic() + drain_s)
            if left:
                log.warning("archive_drain_incomplete", consumer=self.consumer)
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def run(self) -> None:
        """Drain until stopped; failures only delay (retry with backoff)."""
        log.info(
            "archiver_started", consumer=self.consumer, archive=self.settings.archive_dsn_redacted
        )
        delays = retry_backoff(self.settings).delays()
        while not self._stop.is_set():
            if self._attempt(BLOCK_MS) is not None:
                delays.reset()
            else:
                self._stop.wait(next(delays))

    def drain(self, *, deadline: float) -> bool:
        """Archive everything in the outbox now (burst); True if some was left undone."""
        delays = retry_backoff(self.settings).delays()
        self.plan.own_pending = True
        self.plan.claimed_at = None
        while time.monotonic() < deadline:
            source = self.plan.next_source(time.monotonic())
            taken = self._attempt(None)
            if taken is None:
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
                continue
            delays.reset()
            if taken == 0 and source is Source.NEW:  # ours and stale ones came first
                return False
        return True

    def _attempt(self, block_ms: int | None) -> int | None:
        """One step; the entries it took, or None if it failed (logged)."""
        try:
            return self.step(block_ms=block_ms)
        except psycopg.Error as exc:
            log.warning("archive_unavailable", error=describe(exc, self.settings))
            self.plan.failed()
            self.close()  # reconnect on the next attempt
        except redis.RedisError as exc:
            log.warning("archive_outbox_unreachable", error=str(exc))
            self.plan.failed()
        return None

    # -- one step -------------------------------------------------------------

    def step(self, *, block_ms: int | None) -> int:
        """Read one batch (own pending, stale or new) and archive it; how many entries.

        block_ms None: never wait for new entries (a drain)."""
        store = self._open()
        self._ensure_group()
        self._maybe_prune(store)
        now = time.monotonic()
        source = self.plan.next_source(now)
        entries = self._read(source, block_ms)
        self.plan.read(source, len(entries), now)
        for entry_id, fields in entries:
            self._archive(store, entry_id, fields)
        return len(entries)

    def _open(self) -> ArchiveStore:
        if self._store is None:
            self._store = ArchiveStore.open(self.settings)
        return self._store

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: runs queued before any drainer existed count too.
            self.redis.xgroup_create(self.outbox, OUTBOX_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read(self, source: Source, block_ms: int | None) -> list[tuple[Any, dict[Any, Any]]]:
        reply: Any
        if source is Source.STALE:
            reply = self.redis.xautoclaim(
                self.outbox,
                OUTBOX_GROUP,
                self.consumer,
                min_idle_time=int(self.settings.archive_claim_idle_s * 1000),
                start_id="0-0",
                count=READ_COUNT,
            )
            return [e for e in reply[1] if e[1]]  # entries deleted meanwhile come as None
        streams: dict[Any, Any] = {self.outbox: "0" if source is Source.OWN_PENDING else ">"}
        block = block_ms if source is Source.NEW else None
        reply = self.redis.xreadgroup(
            OUTBOX_GROUP, self.consumer, streams, count=READ_COUNT, block=block
        )
        if not reply:
            return []
        return [e for e in reply[0][1] if e[1]]

    def _archive(self, store: ArchiveStore, entry_id: Any, fields: dict[Any, Any]) -> None:
        """Copy one run, then acknowledge it (a bad entry is acknowledged and skipped)."""
        try:
            entry = OutboxEntry.parse(entry_id, fields)
        except OutboxError as exc:
            log.warning("archive_outbox_entry_skipped", error=str(exc))
            self.redis.xack(self.outbox, OUTBOX_GROUP, entry_id)
            return
        span = copy_range(entry.seq, store.archived_upto(entry.session_id))
        after = span.after
        while after < span.upto:
            page = self.runs.replay_page(entry.session_id, after, span.upto, REPLAY_PAGE)
            if not page:
                break  # trimmed or expired: the archive keeps what it has
            store.archive_events(entry.session_id, page)
            after = page[-1].seq
        store.archive_run(entry.session_id, entry.run_id, [])
        self.redis.xack(self.outbox, OUTBOX_GROUP, entry_id)
        self.archived_runs += 1
        log.debug("run_archived", session_id=entry.session_id, run_id=entry.run_id)

    def _maybe_prune(self, store: ArchiveStore) -> None:
        days = self.settings.archive_retention_days
        now = time.monotonic()
        if days < 1 or (self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL_S):
            return
        pruned = store.prune(days=days)
        self._pruned_at = now
        if pruned:
            log.info("archive_pruned", sessions=len(pruned), retention_days=days)


def start_archiver(settings: Settings, *, consumer: str) -> Archiver | None:
    """A running drainer thread when the archive is on, else None."""
    if not settings.archive_enabled:
        return None
    return Archiver(settings, consumer=consumer).start()
