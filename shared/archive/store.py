"""ArchiveStore: the archive over a sync psycopg connection. I/O only; see sql.py."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg

from shared.archive import schema, sql
from shared.archive.rows import RunRow, SessionFilter, SessionPage, TotalsRow, run_row
from shared.events import Envelope
from shared.ids import is_session_id
from shared.settings import Settings

CONNECT_TIMEOUT_S = 5
DAY_S = 86400

# What a lost or refused PostgreSQL connection raises: the archive is unavailable.
ArchiveUnavailable = (psycopg.OperationalError, psycopg.InterfaceError)


def describe(exc: BaseException, settings: Settings) -> str:
    """An error's text with the DSN's password (if any) hidden, safe to log."""
    text = str(exc).strip() or type(exc).__name__
    password = urlsplit(settings.archive_dsn.get_secret_value()).password
    return text.replace(password, "***") if password else text


def connect(settings: Settings) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to the archive with its schema on the search path."""
    conn = psycopg.connect(
        settings.archive_dsn.get_secret_value(),
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="claude-queue",
    )
    conn.execute(sql.SET_SEARCH_PATH, (settings.archive_schema,))
    conn.commit()
    return conn


def require_session_id(session_id: str) -> None:
    if not is_session_id(session_id):
        raise ValueError(f"{session_id!r} is not a session id")


class ArchiveStore:
    """Every read and write of the archive, for sync code (drainers, Client, CLI)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], settings: Settings) -> None:
        self.conn = conn
        self.settings = settings

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> ArchiveStore:
        store = cls(connect(settings), settings)
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> int:
        """Create the schema and apply pending migrations; returns the version now."""
        with self.conn.transaction():
            self.conn.execute(sql.MIGRATION_LOCK, (schema.MIGRATION_LOCK,))
            self.conn.execute(sql.create_schema(self.settings.archive_schema))
            self.conn.execute(schema.VERSION_TABLE)
            row = self.conn.execute(schema.CURRENT_VERSION).fetchone()
            current = int(row[0]) if row else 0
            for version, statements in schema.pending_migrations(current):
                for statement in statements:
                    self.conn.execute(statement)
                self.conn.execute(schema.RECORD_VERSION, (version,))
        return schema.SCHEMA_VERSION

    # -- drainers ------------------------------------------------------------

    def archived_upto(self, session_id: str) -> int:
        """The highest seq of the session the archive holds (0: none)."""
        row = self.conn.execute(sql.ARCHIVED_UPTO, (session_id,)).fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def archive_events(self, session_id: str, envelopes: Sequence[Envelope]) -> None:
        """Store these events of the session (those already archived are left alone)."""
        if envelopes:
            with self.conn.transaction():
                self.conn.execute(sql.INSERT_EVENTS, sql.insert_events(session_id, envelopes))

    def archive_run(
        self, session_id: str, run_id: str, envelopes: Sequence[Envelope] = ()
    ) -> RunRow | None:
        """Store these session events and the run's row, in one transaction (idempotent)."""
        with self.conn.transaction():
            if envelopes:
                self.conn.execute(sql.INSERT_EVENTS, sql.insert_events(session_id, envelopes))
            rows = self.conn.execute(sql.RUN_EVENTS, sql.run_events(session_id, run_id))
            row = run_row(run_id, sql.envelopes(rows.fetchall()))
            if row is not None:
                self.conn.execute(sql.UPSERT_RUN, sql.upsert_run(row))
        return row

    # -- readers -------------------------------------------------------------

    def replay_page(
        self, session_id: str, after: int, upto: int | None, count: int
    ) -> list[Envelope]:
        """Up to `count` archived events with after < seq <= upto (None: no bound)."""
        rows = self.conn.execute(sql.REPLAY, sql.replay(session_id, after, upto, count))
        page = sql.envelopes(rows.fetchall())
        self.conn.commit()
        return page

    def search(self, query: SessionFilter) -> SessionPage:
        rows = self.conn.execute(sql.SEARCH, sql.search(query)).fetchall()
        self.conn.commit()
        found = sql.summaries(rows[: query.limit])
        more = len(rows) > query.limit
        return SessionPage(found, query.offset + query.limit if more else None)

    def totals(self, *, since: float | None = None) -> list[TotalsRow]:
        rows = self.conn.execute(sql.TOTALS, sql.totals(since)).fetchall()
        self.conn.commit()
        return sql.totals_rows(rows)

    # -- deleting ------------------------------------------------------------

    def delete_session(self, session_id: str) -> int:
        """Remove the session's events and runs; returns the rows removed."""
        require_session_id(session_id)
        with self.conn.transaction():
            events = self.conn.execute(sql.DELETE_SESSION_EVENTS, (session_id,)).rowcount
            runs = self.conn.execute(sql.DELETE_SESSION_RUNS, (session_id,)).rowcount
        return max(events, 0) + max(runs, 0)

    def prune(self, *, days: int, now: float | None = None) -> list[str]:
        """Delete sessions whose newest run finished more than `days` ago; their ids."""
        if days < 1:
            raise ValueError("days must be at least 1")
        cutoff = (time.time() if now is None else now) - days * DAY_S
        with self.conn.transaction():
            rows = self.conn.execute(sql.PRUNE, (cutoff,)).fetchall()
        return sorted({str(r[0]) for r in rows})
