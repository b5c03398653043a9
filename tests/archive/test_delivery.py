"""At least once, idempotent: a drainer dying mid-copy, PostgreSQL away and back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from producer.client import Client
from shared.archive import ArchiveStore
from shared.archive.drain import OUTBOX_GROUP
from shared.keys import keys_from
from shared.settings import Settings
from tests.archive.support import TcpProxy, count, wait_for
from tests.conftest import WorkerFactory
from worker.archiver import THREAD_NICE, Archiver


def _pending(redis_client: redis.Redis, settings: Settings) -> int:
    info = redis_client.xpending(keys_from(settings).archive_outbox, OUTBOX_GROUP)
    return int(info["pending"])


def test_a_drainer_that_died_mid_copy_leaves_the_run_to_another_and_it_is_archived_once(
    archive: ArchiveStore, archive_settings: Settings, redis_client: redis.Redis
) -> None:
    settings = archive_settings.model_copy(update={"archive_claim_idle_s": 0.2})
    outbox = keys_from(settings).archive_outbox
    with Client(settings) as client:
        handle = client.submit(prompt="never runs", session_id="arch-kill")
        client.cancel("arch-kill", run_id=handle.run_id)  # finished: queued for archiving
        events = client.history("arch-kill")
    # The dead drainer's state, built by hand: it took the entry, copied part of the session,
    # never acknowledged (test_kill.py reaches that state with a real SIGKILL).
    redis_client.xgroup_create(outbox, OUTBOX_GROUP, id="0", mkstream=True)
    taken: Any = redis_client.xreadgroup(OUTBOX_GROUP, "dead-worker", {outbox: ">"}, count=10)
    assert len(taken[0][1]) == 1
    archive.archive_events("arch-kill", events[:2])
    assert _pending(redis_client, settings) == 1

    drainer = Archiver(settings, consumer="alive").start()
    try:
        schema = settings.archive_schema
        wait_for(lambda: count(schema, "SELECT count(*) FROM runs") == 1, what="the run row")
        wait_for(lambda: _pending(redis_client, settings) == 0, what="the entry acknowledged")
    finally:
        drainer.stop()
    assert count(schema, "SELECT count(*) FROM events") == len(events)
    assert archive.replay_page("arch-kill", 0, None, 100) == events
    # Delivered again (at least once): still one copy of each event and one row.
    redis_client.xadd(
        outbox, {"session_id": "arch-kill", "run_id": handle.run_id, "seq": events[-1].seq}
    )
    again = Archiver(settings, consumer="again")
    assert again.drain(deadline=wait_deadline()) is False
    again.close()
    assert count(schema, "SELECT count(*) FROM events") == len(events)
    assert count(schema, "SELECT count(*) FROM runs") == 1


def wait_deadline() -> float:
    return time.monotonic() + 30


def test_runs_finished_while_postgres_is_unreachable_are_archived_once_it_is_back(
    archive: ArchiveStore,
    archive_settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    del archive
    proxy = TcpProxy.reserved()  # nothing listens there yet: connections are refused
    settings = archive_settings.model_copy(update={"archive_dsn": SecretStr(proxy.dsn)})
    schema = settings.archive_schema
    try:
        start_worker(settings_override=settings)
        with Client(archive_settings) as client:  # producers need no archive here
            handles = [client.submit(prompt=f"say {n}", session_id="arch-down") for n in range(2)]
            for handle in handles:
                assert handle.wait(timeout_s=60).status == "succeeded"
        assert count(schema, "SELECT count(*) FROM runs") == 0
        proxy.open()  # PostgreSQL is back
        wait_for(lambda: count(schema, "SELECT count(*) FROM runs") == 2, what="both runs")
    finally:
        proxy.close()
    with Client(archive_settings) as client:
        n_events = len(client.history("arch-down"))
    assert count(schema, "SELECT count(*) FROM events") == n_events


def test_the_dsn_password_never_shows_in_errors(archive_settings: Settings) -> None:
    from producer.archive import ArchiveError, ArchiveReader

    proxy = TcpProxy.reserved()
    settings = archive_settings.model_copy(update={"archive_dsn": SecretStr(proxy.dsn)})
    assert "hunter2secret" not in repr(settings)
    assert "hunter2secret" not in settings.archive_dsn_redacted
    reader = ArchiveReader(settings)
    try:
        reader.totals(None)
    except ArchiveError as exc:
        assert "hunter2secret" not in str(exc)
        assert str(proxy.port) in str(exc)
    else:
        raise AssertionError("a closed port answered")
    assert reader.replay_page("s", 0, None, 10) is None  # a stream goes on without it


def _nice(tid: int) -> int:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_the_drainer_thread_runs_at_low_priority_and_the_rest_of_the_worker_does_not(
    archive: ArchiveStore, archive_settings: Settings
) -> None:
    del archive
    before = _nice(threading.get_native_id())
    if before >= THREAD_NICE:
        pytest.skip(f"the tests already run at nice {before}")
    drainer = Archiver(archive_settings, consumer="niced").start()
    try:
        tid = wait_for(lambda: drainer._thread and drainer._thread.native_id, what="the thread")
        wait_for(lambda: _nice(tid) == THREAD_NICE, what="the drainer thread niced")
        assert _nice(threading.get_native_id()) == before  # what forks the horse: unchanged
    finally:
        drainer.stop()
