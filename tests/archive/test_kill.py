"""A worker SIGKILLed mid-archive: another drainer archives the run, each event once.

No simulated crash state: a real `claude-queue worker` runs a real job and its archive
thread starts copying the run. The test holds a PostgreSQL lock the copy needs (an
uncommitted row of its own that the archiver's INSERT conflicts with), waits until
pg_stat_activity shows the worker's backend waiting on it, SIGKILLs the worker's whole
process group, then releases the lock. The killed copy never commits what was in flight;
its outbox entry stays pending on the dead consumer. A `claude-queue archiver` started
next claims it (XAUTOCLAIM, after ARCHIVE_CLAIM_IDLE_S, set small here) and archives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from producer.client import Client
from shared.archive import ArchiveStore
from shared.archive.drain import OUTBOX_GROUP
from shared.keys import keys_from
from shared.runstore import REPLAY_PAGE
from shared.settings import Settings
from tests.archive.support import PG_DSN, count, wait_for
from tests.conftest import REPO, worker_env

SESSION = "arch-sigkill"
N_TEXTS = REPLAY_PAGE + 500  # the copy takes two pages: the first commits on its own
CLAIM_IDLE_S = 0.5  # how long the dead worker's entry waits before another takes it


class Processes:
    """Real processes, each the leader of its own process group; all killed at the end."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        scratch = self.logs / "tmp"
        scratch.mkdir(exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "producer", *args],
                cwd=REPO,
                env=worker_env(self.settings, {"TMPDIR": str(scratch)}),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def kill_all(self) -> None:
        for proc in self.started:
            self.kill_group(proc)


@pytest.fixture
def processes(tmp_path: Path, archive_settings: Settings) -> Iterator[Processes]:
    procs = Processes(
        archive_settings.model_copy(update={"archive_claim_idle_s": CLAIM_IDLE_S}), tmp_path
    )
    try:
        yield procs
    finally:
        procs.kill_all()


def _pg(schema: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(PG_DSN)
    conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
    conn.commit()
    return conn


def _blocked_by(pid: int) -> tuple[int, str, str] | None:
    """The backend waiting on a lock that backend `pid` holds: its pid, app and query."""
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(
            "SELECT pid, application_name, query FROM pg_stat_activity"
            " WHERE %s = ANY(pg_blocking_pids(pid))",
            (pid,),
        ).fetchone()
    return (int(row[0]), str(row[1]), str(row[2])) if row else None


def _backend_alive(pid: int) -> bool:
    with psycopg.connect(PG_DSN) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            is not None
        )


def _archived_seqs(schema: str) -> list[int]:
    with _pg(schema) as conn:
        rows = conn.execute(
            "SELECT seq FROM events WHERE session_id = %s ORDER BY seq", (SESSION,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def _pending(redis_client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    outbox = keys_from(settings).archive_outbox
    return list(redis_client.xpending_range(outbox, OUTBOX_GROUP, min="-", max="+", count=10))


def _hold(conn: psycopg.Connection[tuple[Any, ...]], stage: str, run_id: str) -> None:
    """Open a transaction holding a row the worker's copy will wait on, at `stage`:
    - events: seq REPLAY_PAGE + 1, the first event of the copy's second page (the first
      page commits, the second one's INSERT waits);
    - run: the run's row (every event commits, the run row's upsert waits)."""
    if stage == "events":
        conn.execute(
            "INSERT INTO events (session_id, seq, run_id, ts, type, body)"
            " VALUES (%s, %s, %s, 0, 'lock', '{}')",
            (SESSION, REPLAY_PAGE + 1, run_id),
        )
    else:
        conn.execute(
            "INSERT INTO runs (run_id, session_id, status, finished_at, finished_seq)"
            " VALUES (%s, %s, 'lock', 0, 0)",
            (run_id, SESSION),
        )


@pytest.mark.parametrize("stage", ["events", "run"])
def test_a_worker_sigkilled_mid_archive_leaves_the_run_to_another_drainer_archived_once(
    stage: str,
    archive: ArchiveStore,
    redis_client: redis.Redis,
    processes: Processes,
) -> None:
    settings = processes.settings
    schema = settings.archive_schema
    lock = _pg(schema)
    try:
        with Client(settings) as client:
            handle = client.submit(
                prompt=f"FAKE: many n={N_TEXTS} rate=0 size=40", session_id=SESSION
            )
            _hold(lock, stage, handle.run_id)  # before any worker exists: no race
            worker = processes.start("worker", "worker", "--name", "doomed", "--mode", "fork")
            assert handle.wait(timeout_s=120).status == "succeeded"
            events = client.history(SESSION)
        n = events[-1].seq
        assert [e.seq for e in events] == list(range(1, n + 1))
        assert n > REPLAY_PAGE + 1

        # The worker's archive thread is inside its INSERT, waiting on our row.
        blocked = wait_for(lambda: _blocked_by(lock.info.backend_pid), what="the archiver blocked")
        backend, app, query = blocked
        assert app == "claude-queue"
        assert f"INSERT INTO {'events' if stage == 'events' else 'runs'}" in query
        [entry] = _pending(redis_client, settings)
        assert entry["consumer"] == b"doomed"
        assert entry["times_delivered"] == 1

        Processes.kill_group(worker)  # SIGKILL, the whole group, mid-copy
        assert worker.returncode == -signal.SIGKILL
        lock.rollback()  # our row is gone; the dead worker's transaction never commits
        wait_for(lambda: not _backend_alive(backend), what="the dead worker's backend to end")

        # What the killed copy left: committed pages only, no run row, the entry pending.
        expected = list(range(1, REPLAY_PAGE + 1)) if stage == "events" else list(range(1, n + 1))
        assert _archived_seqs(schema) == expected
        assert count(schema, "SELECT count(*) FROM runs") == 0
        assert [e["consumer"] for e in _pending(redis_client, settings)] == [b"doomed"]

        survivor = processes.start("archiver", "archiver", "--name", "survivor")
        wait_for(lambda: count(schema, "SELECT count(*) FROM runs") == 1, what="the run row")
        wait_for(lambda: not _pending(redis_client, settings), what="the entry acknowledged")
        Processes.kill_group(survivor, signal.SIGTERM)
        assert survivor.returncode == 0
    finally:
        lock.close()

    # Exactly once: every seq 1..n once, one run row, the bodies as Redis holds them.
    assert _archived_seqs(schema) == list(range(1, n + 1))
    assert count(schema, "SELECT count(*) FROM events") == n
    assert count(schema, "SELECT count(*) FROM runs WHERE run_id = %s", handle.run_id) == 1
    assert count(schema, "SELECT count(*) FROM runs") == 1
    assert count(schema, "SELECT finished_seq FROM runs") == n
    assert archive.replay_page(SESSION, 0, None, 2 * n) == events
