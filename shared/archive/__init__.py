"""The PostgreSQL archive: finished runs kept beyond Redis's lifetime (issue 19).

- schema.py: the tables, as numbered migrations (`schema_version`).
- rows.py: outbox entries, run rows, search filters and results, as types (pure).
- sql.py: every statement and its parameters (pure; nothing built from values).
- drain.py: which session events a run's outbox entry copies (pure).
- store.py / aio.py: ArchiveStore and AsyncArchiveStore, thin faces that only do I/O.
"""

from shared.archive.rows import (
    OutboxEntry,
    OutboxError,
    RunRow,
    SessionFilter,
    SessionPage,
    SessionSummary,
    TotalsRow,
    parse_meta,
    parse_since,
)
from shared.archive.store import ArchiveStore, ArchiveUnavailable, describe

__all__ = [
    "ArchiveStore",
    "ArchiveUnavailable",
    "OutboxEntry",
    "OutboxError",
    "RunRow",
    "SessionFilter",
    "SessionPage",
    "SessionSummary",
    "TotalsRow",
    "describe",
    "parse_meta",
    "parse_since",
]
