"""Every statement the archive runs, with its parameters and how its rows are read. No I/O.

All values travel as parameters (`%s`); no statement is assembled from a value. The
sync and asyncio faces (store.py, aio.py) run exactly these, so they cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from psycopg import sql

from shared.archive.rows import ROW_EVENT_TYPES, RunRow, SessionFilter, SessionSummary, TotalsRow
from shared.events import Envelope, envelopes_from_json
from shared.gcpause import gc_paused

Params = tuple[Any, ...]

SET_SEARCH_PATH = "SELECT set_config('search_path', %s, false)"
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(%s)"


def create_schema(schema: str) -> sql.Composed:
    """CREATE SCHEMA for the configured name (validated by Settings), quoted as an identifier."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


ARCHIVED_UPTO = "SELECT coalesce(max(seq), 0) FROM events WHERE session_id = %s"

# One statement for a whole batch: arrays in, rows already present left alone. The arrays
# go in binary (%b): as text, psycopg quotes every `"` and `\` of every JSON body with a
# regex substitution, 3/4 of a drainer's CPU (10,006 events: 520 -> 120 ms).
INSERT_EVENTS = """
INSERT INTO events (session_id, seq, run_id, ts, type, body)
SELECT %s, * FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::text[])
ON CONFLICT (session_id, seq) DO NOTHING
"""


def insert_events(session_id: str, envelopes: Sequence[Envelope]) -> Params:
    return (
        session_id,
        [e.seq for e in envelopes],
        [e.run_id for e in envelopes],
        [e.ts for e in envelopes],
        [str(e.type) for e in envelopes],
        [e.to_json() for e in envelopes],
    )


RUN_EVENTS = """
SELECT body, seq FROM events
WHERE session_id = %s AND run_id = %s AND type = ANY(%s::text[])
ORDER BY seq
"""


def run_events(session_id: str, run_id: str) -> Params:
    return (session_id, run_id, list(ROW_EVENT_TYPES))


_RUN_COLUMNS = (
    "run_id",
    "session_id",
    "status",
    "finished_at",
    "finished_seq",
    "submitted_at",
    "started_at",
    "duration_s",
    "model",
    "profile",
    "worker",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "num_turns",
    "metadata",
    "prompt_preview",
)
UPSERT_RUN = """
INSERT INTO runs (run_id, session_id, status, finished_at, finished_seq, submitted_at,
    started_at, duration_s, model, profile, worker, cost_usd, input_tokens, output_tokens,
    num_turns, metadata, prompt_preview)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)
ON CONFLICT (run_id) DO UPDATE SET
    session_id = EXCLUDED.session_id, status = EXCLUDED.status,
    finished_at = EXCLUDED.finished_at, finished_seq = EXCLUDED.finished_seq,
    submitted_at = EXCLUDED.submitted_at, started_at = EXCLUDED.started_at,
    duration_s = EXCLUDED.duration_s, model = EXCLUDED.model, profile = EXCLUDED.profile,
    worker = EXCLUDED.worker, cost_usd = EXCLUDED.cost_usd,
    input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
    num_turns = EXCLUDED.num_turns, metadata = EXCLUDED.metadata,
    prompt_preview = EXCLUDED.prompt_preview
"""


def upsert_run(row: RunRow) -> Params:
    values = row.as_dict()
    values["metadata"] = json.dumps(row.metadata or {})
    return tuple(values[c] for c in _RUN_COLUMNS)


REPLAY = """
SELECT body, seq FROM events
WHERE session_id = %s AND seq > %s AND (%s::bigint IS NULL OR seq <= %s)
ORDER BY seq LIMIT %s
"""


def replay(session_id: str, after: int, upto: int | None, count: int) -> Params:
    return (session_id, after, upto, upto, count)


def envelopes(rows: Sequence[tuple[Any, ...]]) -> list[Envelope]:
    """Envelopes from rows of (archived body, its seq), in their order.

    Decoded with the cyclic GC paused (shared/gcpause.py), as the Redis log's pages are:
    a replay of 10,006 archived events took ~136 ms with the collector on, ~96 ms off."""
    with gc_paused():
        return envelopes_from_json([row[0] for row in rows])


# Sessions with at least one run matching every filter; newest activity first.
SEARCH = """
SELECT session_id, count(*), min(submitted_at), max(finished_at),
       (array_agg(status ORDER BY finished_at DESC))[1], sum(cost_usd),
       array_remove(array_agg(DISTINCT model), NULL),
       array_remove(array_agg(DISTINCT profile), NULL)
FROM runs
WHERE session_id IN (
    SELECT session_id FROM runs
    WHERE (%s::float8 IS NULL OR finished_at >= %s)
      AND (%s::text IS NULL OR status = %s)
      AND metadata @> %s::jsonb
)
GROUP BY session_id
ORDER BY max(finished_at) DESC, session_id
LIMIT %s OFFSET %s
"""


def search(f: SessionFilter) -> Params:
    """Parameters of SEARCH; one row more than the page, to tell whether another follows."""
    meta = json.dumps(f.meta)
    return (f.since, f.since, f.status, f.status, meta, f.limit + 1, f.offset)


def summaries(rows: Sequence[tuple[Any, ...]]) -> list[SessionSummary]:
    return [
        SessionSummary(
            session_id=r[0],
            runs=int(r[1]),
            first_submitted_at=r[2],
            last_finished_at=float(r[3]),
            last_status=r[4],
            cost_usd=None if r[5] is None else float(r[5]),
            models=sorted(r[6]),
            profiles=sorted(r[7]),
        )
        for r in rows
    ]


TOTALS = """
SELECT (to_timestamp(finished_at) AT TIME ZONE 'UTC')::date AS day, model, profile,
       count(*), coalesce(sum(cost_usd), 0), coalesce(sum(input_tokens), 0),
       coalesce(sum(output_tokens), 0)
FROM runs
WHERE (%s::float8 IS NULL OR finished_at >= %s)
GROUP BY day, model, profile
ORDER BY day, model NULLS FIRST, profile NULLS FIRST
"""


def totals(since: float | None) -> Params:
    return (since, since)


def totals_rows(rows: Sequence[tuple[Any, ...]]) -> list[TotalsRow]:
    return [
        TotalsRow(
            day=r[0].isoformat() if isinstance(r[0], date) else str(r[0]),
            model=r[1],
            profile=r[2],
            runs=int(r[3]),
            cost_usd=float(r[4]),
            input_tokens=int(r[5]),
            output_tokens=int(r[6]),
        )
        for r in rows
    ]


# A session is pruned whole, once its newest run finished before the cutoff.
PRUNE = """
WITH old AS (
    SELECT session_id FROM runs GROUP BY session_id HAVING max(finished_at) < %s
), gone AS (
    DELETE FROM events USING old WHERE events.session_id = old.session_id
)
DELETE FROM runs USING old WHERE runs.session_id = old.session_id
RETURNING runs.session_id
"""

DELETE_SESSION_EVENTS = "DELETE FROM events WHERE session_id = %s"
DELETE_SESSION_RUNS = "DELETE FROM runs WHERE session_id = %s"
