"""The archive's tables, as numbered migrations applied in order on start.

`schema_version` holds one row per migration applied. Every process that opens the
archive migrates it, under a transaction-scoped advisory lock, so two workers
starting at once never apply the same step twice.

- events: every archived envelope, its JSON exactly as Redis held it (`body`), keyed by
  (session_id, seq), so a second copy of the same event is a no-op.
- runs: one row per finished run (status, timings, model, profile, cost, tokens,
  metadata as jsonb, prompt preview), keyed by run id.
"""

from __future__ import annotations

# A fixed key for pg_advisory_xact_lock: "claude-queue archive migration".
MIGRATION_LOCK = 0x6371_6172_6368

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS events (
            session_id text NOT NULL,
            seq bigint NOT NULL,
            run_id text NOT NULL,
            ts double precision NOT NULL,
            type text NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        "CREATE INDEX IF NOT EXISTS events_by_run ON events (session_id, run_id)",
        """CREATE TABLE IF NOT EXISTS runs (
            run_id text PRIMARY KEY,
            session_id text NOT NULL,
            status text NOT NULL,
            submitted_at double precision,
            started_at double precision,
            finished_at double precision NOT NULL,
            duration_s double precision,
            model text,
            profile text,
            worker text,
            cost_usd double precision,
            input_tokens bigint,
            output_tokens bigint,
            num_turns integer,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            prompt_preview text,
            finished_seq bigint NOT NULL,
            archived_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id)",
        "CREATE INDEX IF NOT EXISTS runs_by_finish ON runs (finished_at)",
        "CREATE INDEX IF NOT EXISTS runs_by_metadata ON runs USING gin (metadata jsonb_path_ops)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_VERSION = "INSERT INTO schema_version (version) VALUES (%s)"


def pending_migrations(current: int) -> list[tuple[int, tuple[str, ...]]]:
    """The migrations after version `current`, numbered from 1."""
    if current > SCHEMA_VERSION:
        raise ArchiveSchemaError(
            f"the archive's schema is version {current}, newer than this code's "
            f"{SCHEMA_VERSION}: upgrade claude-queue"
        )
    return [(n, MIGRATIONS[n - 1]) for n in range(current + 1, SCHEMA_VERSION + 1)]


class ArchiveSchemaError(RuntimeError):
    """The archive's schema cannot be used by this version."""
