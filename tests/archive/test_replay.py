"""Runs go through real workers into PostgreSQL; replay falls back to the archive."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import redis

from producer.aio import AsyncClient
from producer.client import Client
from shared.archive import ArchiveStore
from shared.keys import keys_from
from shared.runstore import RunStore
from shared.settings import Settings
from tests.archive.support import count, envelope
from tests.conftest import WorkerFactory

WORKER_EXIT_S = 120


def _run_burst(start_worker: WorkerFactory, settings: Settings) -> None:
    """A --burst worker runs what is queued and drains the outbox before it exits."""
    proc = start_worker(burst=True, settings_override=settings)
    assert proc.wait(timeout=WORKER_EXIT_S) == 0


def test_runs_are_archived_and_replayed_after_their_redis_keys_are_gone(
    archive: ArchiveStore,
    archive_settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    schema = archive_settings.archive_schema
    with Client(archive_settings) as client:
        for n in range(3):
            client.submit(prompt=f"say run {n}", session_id="arch-1", metadata={"team": "a"})
        _run_burst(start_worker, archive_settings)
        before = client.history("arch-1")
        assert [e.seq for e in before] == list(range(1, len(before) + 1))
        assert count(schema, "SELECT count(*) FROM runs WHERE session_id = %s", "arch-1") == 3
        n_events = count(schema, "SELECT count(*) FROM events WHERE session_id = %s", "arch-1")
        assert n_events == len(before)
        assert redis_client.xlen(keys_from(archive_settings).archive_outbox) == 3
        # Redis forgets the session (expiry, a restart without AOF): every key is gone.
        RunStore(redis_client, archive_settings).delete_session("arch-1")
        assert redis_client.exists(keys_from(archive_settings).log("arch-1")) == 0
        after = client.history("arch-1")
    assert after == before
    assert [e.seq for e in after] == list(range(1, len(before) + 1))

    async def replay() -> list[int]:
        async with AsyncClient(archive_settings) as aclient:
            return [e.seq async for e in aclient.stream("arch-1", after=2, follow=False)]

    assert asyncio.run(replay()) == list(range(3, len(before) + 1))


def test_a_live_session_whose_first_runs_are_only_archived_replays_without_a_gap(
    archive: ArchiveStore,
    archive_settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    del archive
    keys = keys_from(archive_settings)
    with Client(archive_settings) as client:
        for n in range(2):
            client.submit(prompt=f"say early {n}", session_id="arch-2")
        _run_burst(start_worker, archive_settings)
        early = client.history("arch-2")
        # The log loses its head (MAXLEN trimming): the first run is in PostgreSQL only.
        keep_from = next(e.seq for e in early if e.type == "finished") + 1
        redis_client.xtrim(keys.log("arch-2"), minid=f"{keep_from}-0", approximate=False)
        head = cast(list[Any], redis_client.xrange(keys.log("arch-2"), count=1))[0][0]
        assert head == f"{keep_from}-0".encode()
        # A new run, streamed from seq 0 while it is live.
        handle = client.submit(prompt="say late", session_id="arch-2")
        stream = client.stream(
            "arch-2", after=0, stop_at_finish=True, run_id=handle.run_id, timeout_s=120
        )
        first = next(stream)  # the replay reached the archive before the worker started
        start_worker(settings_override=archive_settings)
        seqs = [first.seq, *(e.seq for e in stream)]
    assert seqs == list(range(1, seqs[-1] + 1))
    assert seqs[-1] > early[-1].seq

    async def replay() -> list[int]:
        async with AsyncClient(archive_settings) as aclient:
            return [e.seq async for e in aclient.stream("arch-2", follow=False)]

    assert asyncio.run(replay()) == seqs


def test_archived_bodies_come_back_exactly_whatever_they_hold(archive: ArchiveStore) -> None:
    """Array elements travel in binary (no quoting): quotes, backslashes, braces, commas,
    NULL-looking text, escapes, non-ASCII, an empty and a 300 KB text."""
    texts = [
        'say "hi", {a,b} \\ \\" NULL null',
        "line\nbreak\ttab \u0000 \x7f",
        "é 中文 🎉 \u2028",
        "",
        "x" * 300_000,
    ]
    events = [
        envelope("arch-bytes", "r" * 32, seq, 1000.0 + seq, "message", text=text, n=[1, None])
        for seq, text in enumerate(texts, start=1)
    ]
    archive.archive_events("arch-bytes", events)
    back = archive.replay_page("arch-bytes", 0, None, 100)
    assert back == events
    assert [e.to_json() for e in back] == [e.to_json() for e in events]
