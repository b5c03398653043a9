"""AsyncArchiveStore: the archive's reads and deletes over an asyncio psycopg connection.

The same statements as store.py (sql.py), so the event loop never blocks on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import psycopg

from shared.archive import sql
from shared.archive.rows import SessionFilter, SessionPage, TotalsRow
from shared.archive.store import CONNECT_TIMEOUT_S, require_session_id
from shared.events import Envelope
from shared.settings import Settings


async def connect(settings: Settings) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """An asyncio connection to the archive with its schema on the search path."""
    conn = await psycopg.AsyncConnection.connect(
        settings.archive_dsn.get_secret_value(),
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="claude-queue",
    )
    await conn.execute(sql.SET_SEARCH_PATH, (settings.archive_schema,))
    await conn.commit()
    return conn


class AsyncArchiveStore:
    """See ArchiveStore; reads and deletes only (drainers are sync threads)."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        self.conn = conn

    async def close(self) -> None:
        await self.conn.close()

    async def replay_page(
        self, session_id: str, after: int, upto: int | None, count: int
    ) -> list[Envelope]:
        cursor = await self.conn.execute(sql.REPLAY, sql.replay(session_id, after, upto, count))
        page = sql.envelopes(await cursor.fetchall())
        await self.conn.commit()
        return page

    async def search(self, query: SessionFilter) -> SessionPage:
        cursor = await self.conn.execute(sql.SEARCH, sql.search(query))
        rows = await cursor.fetchall()
        await self.conn.commit()
        more = len(rows) > query.limit
        return SessionPage(
            sql.summaries(rows[: query.limit]), query.offset + query.limit if more else None
        )

    async def totals(self, *, since: float | None = None) -> list[TotalsRow]:
        cursor = await self.conn.execute(sql.TOTALS, sql.totals(since))
        rows = await cursor.fetchall()
        await self.conn.commit()
        return sql.totals_rows(rows)

    async def delete_session(self, session_id: str) -> int:
        require_session_id(session_id)
        async with self.conn.transaction():
            events = (await self.conn.execute(sql.DELETE_SESSION_EVENTS, (session_id,))).rowcount
            runs = (await self.conn.execute(sql.DELETE_SESSION_RUNS, (session_id,))).rowcount
        return max(events, 0) + max(runs, 0)
