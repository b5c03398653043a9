"""Worker metrics, scraped from a real `claude-queue worker --metrics-port` as runs happen."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.client import Client
from shared.events import EventType
from shared.settings import Settings
from tests.ops.support import Samples, running_worker, scrape, scrape_until, value
from tests.redis_server import free_port
from worker.proctree import read_stat

STREAM_TIMEOUT_S = 60.0


def _run(client: Client, session_id: str, prompt: str, **fields: object) -> str:
    handle = client.submit(session_id=session_id, prompt=prompt, **fields)  # type: ignore[arg-type]
    events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
    assert events[-1].type is EventType.FINISHED
    return str(events[-1].data["status"])


def test_metrics_follow_runs(settings: Settings, client: Client, tmp_path: Path) -> None:
    port = free_port()
    options = ("--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--mode", "simple")
    with running_worker(settings, tmp_path / "worker.log", *options) as proc:
        before = scrape_until(
            port, lambda s: value(s, "claude_queue_workers", state="idle") == 1, proc
        )
        assert value(before, "claude_queue_redis_up") == 1
        assert value(before, "claude_queue_runs_started_total") == 0
        assert value(before, "claude_queue_workers", state="busy") == 0

        assert _run(client, "ok", "hello", model="test-model", profile="readonly") == "succeeded"
        # A run counts as finished when its finished event is queued, and the event as
        # published once its write returns, which can be after a client has read it.
        after = scrape_until(
            port,
            lambda s: (
                value(s, "claude_queue_runs_finished_total", status="succeeded") == 1
                and value(s, "claude_queue_events_published_total", type="finished") == 1
            ),
        )
        assert value(after, "claude_queue_runs_started_total") == 1
        for event_type in ("queued", "started", "init", "message", "result", "finished"):
            published = value(after, "claude_queue_events_published_total", type=event_type)
            expected = 0 if event_type == "queued" else 1  # queued is the producer's write
            assert published == expected, event_type
        assert value(after, "claude_queue_run_duration_seconds_count") == 1
        assert value(after, "claude_queue_dispatch_seconds_count") == 1
        cost = value(
            after, "claude_queue_cli_cost_usd_total", model="test-model", profile="readonly"
        )
        assert abs(cost - 0.0012) < 1e-9
        assert value(after, "claude_queue_cli_tokens_total", model="test-model", kind="input") == 10
        assert value(after, "claude_queue_cli_tokens_total", model="test-model", kind="output") == 5
        assert value(after, "claude_queue_publish_buffer_bytes") == 0

        assert _run(client, "bad", 'FAKE: exit code=3 stderr="boom"') == "failed"
        failed = scrape_until(
            port, lambda s: value(s, "claude_queue_runs_finished_total", status="failed") == 1
        )
        assert value(failed, "claude_queue_errors_total", code="cli_exit") == 1
        assert value(failed, "claude_queue_runs_started_total") == 2

        # A hanging run keeps the only worker busy: the next run waits in the queue.
        hanging = client.submit(session_id="hang", prompt="FAKE: hang")
        stream = hanging.stream(timeout_s=STREAM_TIMEOUT_S)
        assert next(e for e in stream if e.type is EventType.STARTED)
        client.submit(session_id="waits", prompt="hello")
        busy = scrape_until(port, lambda s: value(s, "claude_queue_workers", state="busy") == 1)
        assert value(busy, "claude_queue_queue_depth", queue=settings.queue_name) == 1
        assert value(busy, "claude_queue_runs_running") == 1
        client.cancel("hang", wait=True)
        assert [e.data["status"] for e in stream if e.type is EventType.FINISHED] == ["interrupted"]
        done = scrape_until(
            port, lambda s: value(s, "claude_queue_runs_finished_total", status="succeeded") == 2
        )
        assert value(done, "claude_queue_runs_finished_total", status="interrupted") == 1
        assert value(done, "claude_queue_cancel_seconds_count") == 1
        assert value(done, "claude_queue_queue_depth", queue=settings.queue_name) == 0
        # No label carries an id.
        text_labels = {v for (_, labels) in done for (_, v) in labels}
        assert not {"ok", "bad", "hang", "waits"} & text_labels


@contextlib.contextmanager
def _pool_after_four_runs(
    settings: Settings, client: Client, tmp_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A pool of two workers that has run four jobs: (its process, metrics port, folder)."""
    port = free_port()
    options = ("--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--processes", "2")
    with running_worker(settings, tmp_path / "pool.log", *options, *extra) as proc:
        scrape_until(port, lambda s: value(s, "claude_queue_workers", state="idle") == 2, proc)
        (folder,) = tmp_path.glob("claude-queue-metrics-*")
        for index in range(4):
            assert _run(client, f"s{index}", "hello") == "succeeded"
        scrape_until(
            port, lambda s: value(s, "claude_queue_runs_finished_total", status="succeeded") == 4
        )
        yield proc, port, folder


def test_pool_members_are_merged_and_outlive_a_killed_member(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    with _pool_after_four_runs(settings, client, tmp_path) as (proc, port, folder):
        victim = next(w.pid for w in client.status().workers if w.pid)
        assert list(folder.glob(f"*_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        # Once the pool saw it die, its files are folded into the pool's own.
        after = scrape_until(
            port,
            lambda s: not list(folder.glob(f"*_{victim}.db")),
            proc,
            about=lambda: sorted(p.name for p in folder.iterdir()),
        )
        assert value(after, "claude_queue_runs_finished_total", status="succeeded") == 4
        assert value(after, "claude_queue_runs_started_total") == 4
        assert value(after, "claude_queue_dispatch_seconds_count") == 4
        assert value(scrape(port), "claude_queue_runs_started_total") == 4


def test_the_private_folder_goes_with_the_pool(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    handles = [client.submit(session_id=f"b{index}", prompt="hello") for index in range(2)]
    port = free_port()
    options = ("--metrics-port", str(port), "--processes", "2", "--burst")
    with running_worker(settings, tmp_path / "burst.log", *options) as proc:
        assert proc.wait(timeout=120) == 0  # burst: once the queue is empty the pool ends
    assert not list(tmp_path.glob("claude-queue-metrics-*"))
    for handle in handles:
        events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
        assert events[-1].data["status"] == "succeeded"


def _pids_with_files(folder: Path) -> set[str]:
    """`<kind>_<pid>.db` and `<kind>_absorbed<pid>.db`: the part after the last `_`."""
    return {path.stem.rsplit("_", 1)[-1] for path in folder.glob("*.db")}


@pytest.mark.parametrize("horse_runs", [1, 100])
def test_fork_mode_horses_are_counted_and_their_files_folded(
    settings: Settings, client: Client, tmp_path: Path, horse_runs: int
) -> None:
    port = free_port()
    options = ("--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--mode", "fork")
    env = {"CLAUDE_QUEUE_HORSE_RUNS": str(horse_runs)}
    with running_worker(settings, tmp_path / "fork.log", *options, env=env) as proc:
        scrape_until(port, lambda s: value(s, "claude_queue_workers", state="idle") == 1, proc)
        (folder,) = tmp_path.glob("claude-queue-metrics-*")
        for index in range(3):
            assert _run(client, f"f{index}", "hello") == "succeeded"
        own = {str(proc.pid), f"absorbed{proc.pid}"}
        if horse_runs == 1:
            # Each job's work horse writes its own files; the worker folds them into its
            # own once the job has ended: then only the worker's files are left.
            def folded(_samples: Samples) -> bool:
                return _pids_with_files(folder) <= own
        else:
            # One horse ran all three jobs and waits for the next: its files are live,
            # read as they are, and folded when it ends.
            def folded(_samples: Samples) -> bool:
                return len(_pids_with_files(folder) - own) <= 1

        done = scrape_until(port, folded, proc)
        assert value(done, "claude_queue_runs_finished_total", status="succeeded") == 3
        assert value(done, "claude_queue_runs_started_total") == 3
        assert value(done, "claude_queue_run_duration_seconds_count") == 3


def test_a_stopped_pool_members_horse_is_folded_with_it(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    with _pool_after_four_runs(settings, client, tmp_path, "--mode", "fork") as (
        proc,
        port,
        folder,
    ):
        members = {w.pid for w in client.status().workers if w.pid}
        horses = {int(p) for p in _pids_with_files(folder) if p.isdigit()} - members - {proc.pid}
        assert horses  # the spares that ran the jobs are alive, with their files
        horse = next(iter(horses))
        stat = read_stat(horse)
        assert stat is not None and stat.ppid in members
        os.kill(stat.ppid, signal.SIGTERM)  # its worker stops: teardown ends the spare
        after = scrape_until(
            port,
            lambda s: not ({str(stat.ppid), str(horse)} & _pids_with_files(folder)),
            proc,
            about=lambda: sorted(p.name for p in folder.iterdir()),
        )
        assert value(after, "claude_queue_runs_finished_total", status="succeeded") == 4
        assert value(after, "claude_queue_runs_started_total") == 4
