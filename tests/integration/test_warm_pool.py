"""worker/warm.py's pool on real processes: a CLI a park pushes out of a full pool stays
alive, and spared by the orphan sweep, until close_evicted; the worker calls that once
the run is over, so closing it does not hold the run's `finished`."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker.command import CliCommand
from worker.markers import RUN_MARKER_ENV
from worker.process import CliProcess
from worker.warm import WarmCli, WarmPool, fingerprint

# Stands in for a CLI waiting for its session's next prompt: it ends when stdin closes.
WAITING = "import sys; sys.stdin.buffer.read()"


@pytest.fixture
def spawned() -> Iterator[list[CliProcess]]:
    procs: list[CliProcess] = []
    yield procs
    for proc in procs:  # whatever a failed test left
        proc.kill_tree()
        if proc.pid:
            proc.wait()
        proc.close()


def _warm(session_id: str, tmp_path: Path, spawned: list[CliProcess]) -> WarmCli:
    run_id = uuid.uuid4().hex
    env = {"PATH": os.environ.get("PATH", ""), RUN_MARKER_ENV: run_id}
    command = CliCommand(argv=[sys.executable, "-c", WAITING], env=env, stdin=b"", cwd=None)
    proc = CliProcess(command, run_id=run_id, max_line_bytes=4096, stderr_tail_bytes=4096)
    spawned.append(proc)
    proc.spawn()
    tmpdir = tmp_path / session_id
    tmpdir.mkdir()
    return WarmCli(
        session_id=session_id,
        proc=proc,
        tree_id=run_id,
        fingerprint=fingerprint(command),
        token=1,
        claude_session_id=f"claude-{session_id}",
        tmpdir=str(tmpdir),
    )


def test_a_cli_pushed_out_by_a_park_lives_until_close_evicted(
    tmp_path: Path, spawned: list[CliProcess]
) -> None:
    parks: list[dict[str, float]] = []
    pool = WarmPool(idle_s=60, max_size=1, on_park=lambda: parks.append(pool.sessions()))
    first, second = _warm("a", tmp_path, spawned), _warm("b", tmp_path, spawned)
    pool.park(first)
    pool.park(second)
    # Out of the pool (not advertised, not taken) but not closed yet: the run goes on.
    assert [list(p) for p in parks] == [["a"], ["b"]]
    assert first.proc.poll() is None
    assert first.tree_id in pool.tree_ids()  # the orphan sweep spares it meanwhile
    pool.close_evicted()
    assert first.proc.poll() is not None
    assert not Path(first.tmpdir).exists()
    assert pool.tree_ids() == {second.tree_id}
    assert pool.drain_closed_trees() == [first.tree_id]
    assert second.proc.poll() is None
    pool.close_evicted()  # nothing left to close: nothing happens
    assert second.proc.poll() is None
    pool.close_all()
    assert second.proc.poll() is not None


def test_close_all_closes_what_was_evicted_and_not_yet_closed(
    tmp_path: Path, spawned: list[CliProcess]
) -> None:
    pool = WarmPool(idle_s=60, max_size=1)
    first, second = _warm("a", tmp_path, spawned), _warm("b", tmp_path, spawned)
    pool.park(first)
    pool.park(second)
    pool.close_all()  # the worker stopping between the park and close_evicted
    assert first.proc.poll() is not None
    assert second.proc.poll() is not None
    assert pool.tree_ids() == set()


class _Unclosable(WarmCli):
    """A warm CLI whose close fails (an OSError from the kill, say)."""

    def close(self) -> None:
        raise OSError("the close failed")


def test_a_close_that_fails_is_logged_and_the_others_are_still_closed(
    tmp_path: Path, spawned: list[CliProcess]
) -> None:
    pool = WarmPool(idle_s=60, max_size=1)
    usual = _warm("a", tmp_path, spawned)
    broken = _Unclosable(**{f: getattr(usual, f) for f in WarmCli.__dataclass_fields__})
    second, third = _warm("b", tmp_path, spawned), _warm("c", tmp_path, spawned)
    for warm in (broken, second, third):
        pool.park(warm)  # a, then b, pushed out
    with structlog.testing.capture_logs() as logs:
        pool.close_evicted()  # does not raise
    assert [e["session_id"] for e in logs if e["event"] == "warm_cli_close_failed"] == ["a"]
    assert second.proc.poll() is not None
    assert pool.drain_closed_trees() == [second.tree_id]  # a's record stays: see close_evicted
    assert third.proc.poll() is None
