"""11. Archive: copy into PostgreSQL, replay from it, and the hot path while it drains.

- throughput: one run of `FAKE: many n=10000 rate=0` fills a session log; an outbox
  entry for it is drained by `Archiver.drain` into an empty schema (events/s).
- replay: the session's Redis keys are deleted; `client.history()` reads all 10,000
  events from the archive (target <= 100 ms). Baseline: the same history from Redis.
- hot path: write->client latency of a worker with the archive on while its drainer
  copies a backlog of big sessions (queued as the measured run starts, larger than it
  can copy before that run ends: the note says how much it had copied), against the
  same worker with the archive off (target: no measurable change, p50 within 0.1 ms).
PostgreSQL: CLAUDE_QUEUE_BENCH_ARCHIVE_DSN (default the tests' 127.0.0.1:5432/test),
schema `cqbench`, emptied first.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg
from pydantic import SecretStr

from bench import procs
from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.latency import queue_latencies
from bench.stats import MS, Row, median, percentile, skipped_row, trials_row
from producer.client import Client
from shared.archive import ArchiveStore
from shared.keys import keys_from
from shared.settings import Settings
from worker.archiver import Archiver

QUEUE = "cqbench"
ARCHIVE_QUEUE = "cqbench-archive"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "cqbench"
REPLAY_TARGET_MS = 100.0
ADDED_TARGET_MS = 0.1
BACKLOG_SESSIONS = 3


def _with_archive(settings: Settings) -> Settings:
    dsn = os.environ.get("CLAUDE_QUEUE_BENCH_ARCHIVE_DSN", DEFAULT_DSN)
    return settings.model_copy(update={"archive_dsn": SecretStr(dsn), "archive_schema": SCHEMA})


def _empty(settings: Settings) -> None:
    store = ArchiveStore.open(settings)
    store.conn.execute("TRUNCATE events, runs")
    store.conn.commit()
    store.close()


def _fill(h: Harness, workers: Workers, n: int) -> tuple[str, str, int]:
    session = h.session("archive")
    handle = workers.client.submit(
        session_id=session, prompt=f"FAKE: many n={n} rate=0", cwd=str(h.workdir)
    )
    if handle.wait(timeout_s=RUN_TIMEOUT_S).status != "succeeded":
        raise RuntimeError("the run that fills the log did not succeed")
    last = workers.client.store.last_seq(session) or 0
    return session, handle.run_id, last


def _queue_for_archive(client: Client, session: str, run_id: str, seq: int) -> None:
    outbox = keys_from(client.settings).archive_outbox
    client.redis.xadd(outbox, {"session_id": session, "run_id": run_id, "seq": seq})


def run(h: Harness) -> list[Row]:
    n = 2_000 if h.quick else 10_000
    workers = h.workers(QUEUE)
    settings = _with_archive(workers.settings)
    try:
        _empty(settings)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL unreachable ({exc.__class__.__name__}); run .ci/ensure-postgres"
        return [skipped_row("archive", reason)]
    session, run_id, last = _fill(h, workers, n)
    client = Client(settings)
    try:
        rows = [_throughput(client, settings, session, run_id, last)]
        rows.append(_replay(h, client, workers.client, session, last))
        rows.append(_hot_path(h, workers, settings))
    finally:
        client.close()
    return rows


def _throughput(client: Client, settings: Settings, session: str, run_id: str, last: int) -> Row:
    _queue_for_archive(client, session, run_id, last)
    drainer = Archiver(settings, consumer="bench")
    drainer.drain(deadline=time.monotonic() + 5)  # connect and migrate outside the clock
    _empty(settings)
    _queue_for_archive(client, session, run_id, last)
    t0 = time.perf_counter()
    left = drainer.drain(deadline=time.monotonic() + RUN_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    drainer.close()
    if left:
        raise RuntimeError("the outbox was not drained")
    rate = last / elapsed
    return Row(
        name=f"archive: copy {last} events into PostgreSQL",
        unit="events/s",
        n=1,
        median=rate,
        p99=None,
        trial_min=rate,
        trial_max=rate,
        baseline=None,
        baseline_name="-",
        target="-",
        met=None,
        note=f"one run, {elapsed * MS:.0f} ms (XRANGE pages, one INSERT ... unnest per page)",
    )


def _replay(h: Harness, client: Client, redis_client: Client, session: str, last: int) -> Row:
    trials = 5 if h.quick else 20
    from_redis: list[float] = []
    for _ in range(trials):
        t0 = time.perf_counter()
        redis_client.history(session)
        from_redis.append((time.perf_counter() - t0) * MS)
    h.drop_session(session)  # Redis forgets it: only the archive has it now
    times: list[float] = []
    for i in range(trials + 1):
        t0 = time.perf_counter()
        events = client.history(session)
        elapsed = (time.perf_counter() - t0) * MS
        if len(events) != last or events[-1].seq != last:
            raise RuntimeError(f"replayed {len(events)} of {last} archived events")
        if i:
            times.append(elapsed)
    p50 = median(times)
    return trials_row(
        f"archive: history() of {last} archived events (no Redis log)",
        "ms",
        [[v] for v in times],
        baseline=median(from_redis),
        baseline_name="the same history() from the Redis log",
        target=f"<= {REPLAY_TARGET_MS:g} ms",
        met=p50 <= REPLAY_TARGET_MS,
        note=f"{trials} reads; {last / p50 * MS:,.0f} events/s",
    )


def _archive_workers(h: Harness, settings: Settings) -> Workers:
    env = procs.base_env(
        {
            "CLAUDE_QUEUE_REDIS_URL": settings.redis_url.get_secret_value(),
            "CLAUDE_QUEUE_KEY_PREFIX": settings.key_prefix,
            "CLAUDE_QUEUE_QUEUE_NAME": ARCHIVE_QUEUE,
            "CLAUDE_QUEUE_CLAUDE_BIN": settings.claude_bin,
            "CLAUDE_QUEUE_LOG_LEVEL": "warning",
            "CLAUDE_QUEUE_LOG_FORMAT": "json",
            "CLAUDE_QUEUE_ARCHIVE_DSN": settings.archive_dsn.get_secret_value(),
            "CLAUDE_QUEUE_ARCHIVE_SCHEMA": SCHEMA,
        }
    )
    name = f"{ARCHIVE_QUEUE}-w"
    argv = [sys.executable, "-m", "producer", "worker", "--name", name, "--mode", h.mode]
    log_path = h.tmp / f"{ARCHIVE_QUEUE}.log"
    process = procs.start(argv, env, log_path)
    queue_settings = settings.model_copy(update={"queue_name": ARCHIVE_QUEUE})
    workers = Workers([name], process, queue_settings, Client(queue_settings), log_path)
    if not h.await_idle(workers, 30.0):
        procs.stop(process)
        raise RuntimeError(f"archive worker not ready; see {log_path}")
    return workers


def _archived_events(settings: Settings) -> int:
    store = ArchiveStore.open(settings, migrate=False)
    try:
        row = store.conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        store.close()
    return int(row[0]) if row else 0


def _await_archived(settings: Settings, events: int) -> None:
    """Wait until the drainer has copied `events` (so the next 'off' trial runs quiet)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _archived_events(settings) < events:
        if time.monotonic() > deadline:
            raise RuntimeError("the archive worker's drainer did not finish its backlog")
        time.sleep(0.1)


def _hot_path(h: Harness, plain: Workers, settings: Settings) -> Row:
    n, trials = (300, 2) if h.quick else (3000, 3)
    # The drainer's backlog per trial: ~40x the measured run's events, i.e. more than it
    # copies in the ~n/1000 s the measured run lasts, so it drains through all of it.
    fill = 40 * n // BACKLOG_SESSIONS
    archiving = _archive_workers(h, settings)
    overlap: list[str] = []
    try:
        queue_latencies(h, archiving, 50)  # warm-up
        off: list[list[float]] = []
        on: list[list[float]] = []
        for _ in range(trials):
            h.await_idle(plain)
            off.append(queue_latencies(h, plain, n))
            _empty(settings)
            backlog = [_fill(h, plain, fill) for _ in range(BACKLOG_SESSIONS)]
            total = sum(last for _, _, last in backlog)
            h.await_idle(archiving)
            for session, run_id, last in backlog:  # work for the drainer, queued just now
                _queue_for_archive(archiving.client, session, run_id, last)
            on.append(queue_latencies(h, archiving, n))
            copied = _archived_events(settings)  # still below `total`: it drained throughout
            overlap.append(f"{copied:,}/{total:,}")
            _await_archived(settings, total)
            for session, _, _ in backlog:
                h.drop_session(session)
    finally:
        archiving.client.close()
        procs.stop(archiving.process)
    pooled_on = [v for t in on for v in t]
    pooled_off = [v for t in off for v in t]
    added = median(pooled_on) - median(pooled_off)
    return trials_row(
        "archive: write->client latency, archive draining (p50 vs archive off)",
        "ms",
        on,
        baseline=median(pooled_off),
        baseline_name="the same worker setup, archive off",
        target=f"added p50 <= {ADDED_TARGET_MS:g} ms",
        met=added <= ADDED_TARGET_MS,
        note=f"added p50 {added:+.3f} ms, p99 on {percentile(pooled_on, 99):.2f} / "
        f"off {percentile(pooled_off, 99):.2f} ms; backlog events archived by the end of "
        f"each 'on' trial: {', '.join(overlap)} (below the total: drained throughout)",
    )
