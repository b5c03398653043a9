"""The producer's side of the archive: replay fallback, search, totals and deletes.

One lazily opened PostgreSQL connection per client, reopened after a failure. A read
the archive cannot answer is logged and answered `None`, so a stream goes on with what
Redis holds; search, totals and deletes raise ArchiveError instead, naming the cause.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import structlog

from shared.archive import ArchiveStore, SessionFilter, SessionPage, TotalsRow, describe
from shared.archive import aio as archive_aio
from shared.archive.aio import AsyncArchiveStore
from shared.errors import ClaudeQueueError
from shared.events import Envelope
from shared.settings import Settings

log = structlog.get_logger(__name__)


class ArchiveError(ClaudeQueueError):
    """The archive is off, or PostgreSQL could not answer (the DSN's password hidden)."""


def require_archive(settings: Settings) -> None:
    if not settings.archive_enabled:
        raise ArchiveError("the archive is off: set CLAUDE_QUEUE_ARCHIVE_DSN")


def session_filter(
    *,
    since: float | None = None,
    status: str | None = None,
    meta: dict[str, str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SessionFilter:
    """The filter of `search_sessions` (ValidationError names a bad one)."""
    return SessionFilter(since=since, status=status, meta=meta or {}, limit=limit, offset=offset)


class ArchiveReader:
    """The archive for a sync Client: thread-safe, one connection, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ArchiveStore | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _call(self, what: str, fn: Any) -> Any:
        with self._lock:
            try:
                if self._store is None:
                    self._store = ArchiveStore.open(self.settings)
                return fn(self._store)
            except psycopg.Error as exc:
                self._drop()
                raise ArchiveError(f"archive {what}: {describe(exc, self.settings)}") from None

    def replay_page(
        self, session_id: str, after: int, upto: int | None, count: int
    ) -> list[Envelope] | None:
        """Archived events after < seq <= upto; None when the archive cannot be read."""
        try:
            page: list[Envelope] = self._call(
                "replay", lambda s: s.replay_page(session_id, after, upto, count)
            )
        except ArchiveError as exc:
            log.warning("archive_replay_unavailable", session_id=session_id, error=str(exc))
            return None
        return page

    def search(self, query: SessionFilter) -> SessionPage:
        page: SessionPage = self._call("search", lambda s: s.search(query))
        return page

    def totals(self, since: float | None) -> list[TotalsRow]:
        rows: list[TotalsRow] = self._call("totals", lambda s: s.totals(since=since))
        return rows

    def delete_session(self, session_id: str) -> int:
        removed: int = self._call("delete", lambda s: s.delete_session(session_id))
        return removed

    def prune(self, days: int) -> list[str]:
        pruned: list[str] = self._call("prune", lambda s: s.prune(days=days))
        return pruned


class AsyncArchiveReader:
    """The archive for an AsyncClient, on psycopg's asyncio API (never blocks the loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: AsyncArchiveStore | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def _opened(self) -> AsyncArchiveStore:
        if self._store is None:
            # The sync store migrates: the schema must exist before the first read.
            await asyncio.to_thread(_migrate, self.settings)
            self._store = AsyncArchiveStore(await archive_aio.connect(self.settings))
        return self._store

    async def _call(self, what: str, fn: Any) -> Any:
        async with self._lock:
            try:
                return await fn(await self._opened())
            except psycopg.Error as exc:
                await self._drop()
                raise ArchiveError(f"archive {what}: {describe(exc, self.settings)}") from None

    async def replay_page(
        self, session_id: str, after: int, upto: int | None, count: int
    ) -> list[Envelope] | None:
        try:
            page: list[Envelope] = await self._call(
                "replay", lambda s: s.replay_page(session_id, after, upto, count)
            )
        except ArchiveError as exc:
            log.warning("archive_replay_unavailable", session_id=session_id, error=str(exc))
            return None
        return page

    async def search(self, query: SessionFilter) -> SessionPage:
        page: SessionPage = await self._call("search", lambda s: s.search(query))
        return page

    async def totals(self, since: float | None) -> list[TotalsRow]:
        rows: list[TotalsRow] = await self._call("totals", lambda s: s.totals(since=since))
        return rows

    async def delete_session(self, session_id: str) -> int:
        removed: int = await self._call("delete", lambda s: s.delete_session(session_id))
        return removed


def _migrate(settings: Settings) -> None:
    ArchiveStore.open(settings).close()
