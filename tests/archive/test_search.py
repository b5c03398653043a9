"""Search, totals, prune and delete against the real PostgreSQL; SQL injection attempts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from producer.client import Client
from shared.archive import ArchiveStore, RunRow
from shared.settings import Settings
from tests.archive.support import count, synthetic_run
from tests.conftest import REPO, worker_env

DAY_S = 86400
# The `claude-queue archive` group, run as its own process (as `claude-queue archive ...`).
ARCHIVE_COMMAND = "import sys; from producer.cli_archive import archive; archive(sys.argv[1:])"


def _archive_run(
    store: ArchiveStore, session_id: str, run_id: str, first: int, **kw: Any
) -> RunRow | None:
    events = synthetic_run(session_id, run_id, first, **kw)
    store.archive_events(session_id, events)
    return store.archive_run(session_id, run_id)


@pytest.fixture
def populated(archive: ArchiveStore) -> ArchiveStore:
    now = time.time()
    for n in range(7):
        status = "failed" if n % 3 == 0 else "succeeded"
        meta = {"team": "red" if n % 2 else "blue", "quote": 'it\'s "x"'}
        _archive_run(
            archive,
            f"s-{n}",
            f"{n:032x}",
            1,
            finished_at=now - n * DAY_S,
            status=status,
            metadata=meta,
            model="opus" if n < 3 else "sonnet",
        )
    return archive


def test_a_run_row_holds_what_its_events_say(archive: ArchiveStore) -> None:
    row = _archive_run(
        archive, "s-row", "a" * 32, 1, finished_at=1000.0, cost_usd=0.5, metadata={"k": "v"}
    )
    assert row is not None
    assert (row.status, row.model, row.profile, row.cost_usd) == (
        "succeeded",
        "sonnet",
        "readonly",
        0.5,
    )
    assert (row.input_tokens, row.output_tokens, row.metadata) == (10, 5, {"k": "v"})
    assert row.prompt_preview is not None and len(row.prompt_preview) == 200
    assert (row.submitted_at, row.started_at, row.finished_at) == (997.0, 998.0, 1000.0)


def test_search_filters_and_pages(populated: ArchiveStore, archive_settings: Settings) -> None:
    with Client(archive_settings) as client:
        everything = client.search_sessions(limit=100)
        assert [s.session_id for s in everything.sessions] == [f"s-{n}" for n in range(7)]
        assert everything.next_offset is None
        recent = client.search_sessions(since=time.time() - 2.5 * DAY_S)
        assert [s.session_id for s in recent.sessions] == ["s-0", "s-1", "s-2"]
        failed = client.search_sessions(status="failed")
        assert [s.session_id for s in failed.sessions] == ["s-0", "s-3", "s-6"]
        red = client.search_sessions(meta={"team": "red"})
        assert [s.session_id for s in red.sessions] == ["s-1", "s-3", "s-5"]
        both = client.search_sessions(meta={"team": "blue"}, status="failed")
        assert [s.session_id for s in both.sessions] == ["s-0", "s-6"]
        quoted = client.search_sessions(meta={"quote": 'it\'s "x"'})
        assert len(quoted.sessions) == 7
        seen: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = client.search_sessions(limit=3, offset=offset)
            assert len(page.sessions) <= 3
            seen += [s.session_id for s in page.sessions]
            offset = page.next_offset
        assert seen == [f"s-{n}" for n in range(7)]
        totals = client.archive_totals()
        assert sum(t.runs for t in totals) == 7
        assert {t.model for t in totals} == {"opus", "sonnet"}
        assert round(sum(t.cost_usd for t in totals), 6) == 0.07


def test_sql_injection_in_filters_is_only_data(
    populated: ArchiveStore, archive_settings: Settings
) -> None:
    schema = archive_settings.archive_schema
    attempts = [
        {"team": "red' OR '1'='1"},
        {"team') OR 1=1 --": "x"},
        {"team": "x'; DROP TABLE runs; --"},
    ]
    with Client(archive_settings) as client:
        for meta in attempts:
            assert client.search_sessions(meta=meta).sessions == []
        assert client.search_sessions(status="failed' OR 'a'='a").sessions == []
    assert count(schema, "SELECT count(*) FROM runs") == 7


def test_prune_deletes_only_sessions_idle_past_the_retention(
    populated: ArchiveStore, archive_settings: Settings
) -> None:
    schema = archive_settings.archive_schema
    # s-4 had an old run and a new one: it is still in use, so it is kept whole.
    _archive_run(populated, "s-4", "f" * 32, 6, finished_at=time.time())
    settings = archive_settings.model_copy(update={"archive_retention_days": 4})
    result = subprocess.run(
        [sys.executable, "-c", ARCHIVE_COMMAND, "prune", "--json"],
        cwd=REPO,
        env=worker_env(settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pruned_sessions": ["s-5", "s-6"], "days": 4}
    assert count(schema, "SELECT count(*) FROM runs WHERE session_id IN ('s-5', 's-6')") == 0
    assert count(schema, "SELECT count(*) FROM events WHERE session_id = 's-6'") == 0
    assert count(schema, "SELECT count(*) FROM runs WHERE session_id = 's-4'") == 2
    assert populated.prune(days=4) == []


def test_session_delete_removes_the_archived_session_too(
    populated: ArchiveStore, archive_settings: Settings, redis_client: redis.Redis
) -> None:
    del redis_client
    schema = archive_settings.archive_schema
    with Client(archive_settings) as client:
        client.delete_session("s-2")  # in the archive only: Redis has no key of it
        with pytest.raises(Exception, match="not a session id"):
            client.delete_session("s-*")
    assert count(schema, "SELECT count(*) FROM runs WHERE session_id = 's-2'") == 0
    assert count(schema, "SELECT count(*) FROM events WHERE session_id = 's-2'") == 0
    assert count(schema, "SELECT count(*) FROM runs") == 6
