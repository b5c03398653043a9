"""Runner logic on the fake store: no Redis, no worker process, only the fake CLI."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.events import ErrorCode, EventType, RunStatus
from shared.jobs import PromptJob, RunRequest
from shared.runstore import CancelOutcome, RunState
from shared.settings import Settings
from tests.conftest import FAKE_CLI
from tests.fakes import FakeRunStore, fake_context, run_publisher
from worker.command import build_command
from worker.context import WorkerContext
from worker.interaction import Interaction
from worker.outcome import RunObservations, final_events
from worker.process import CliProcess
from worker.pump import CancelState, pump
from worker.runner import claim_and_fail

# A run id of this test process's own: killing a run's tree also kills, anywhere on the
# host, each process carrying its run id marker, so a shared constant let another xdist
# process's teardown kill this one's CLI (its "hang" run ended early, with no timeout).
SESSION, RUN_ID = "s", uuid.uuid4().hex


def make_store(idle_timeout_s: float = 60.0) -> FakeRunStore:
    settings = Settings(key_prefix="fake", claude_bin=str(FAKE_CLI), idle_timeout_s=idle_timeout_s)
    return FakeRunStore(settings)


def request(prompt: str) -> RunRequest:
    return RunRequest(
        run_id=RUN_ID, submitted_at=time.time(), job=PromptJob(session_id=SESSION, prompt=prompt)
    )


@pytest.fixture
def spawned() -> Iterator[list[CliProcess]]:
    """CLI processes a test started; killed and reaped after it, whatever happened."""
    procs: list[CliProcess] = []
    yield procs
    for proc in procs:
        proc.kill_tree()
        if proc.pid:
            proc.wait()
        proc.close()


def run_pump(
    ctx: WorkerContext,
    prompt: str,
    spawned: list[CliProcess],
    home: Path,
    meanwhile: Callable[[], object] = lambda: None,
) -> tuple[RunObservations, CancelState, int]:
    """Claim, spawn the fake CLI (HOME and cwd: `home`), call `meanwhile`, then pump.

    Returns what the pump saw, its cancel state and the CLI's exit code.
    """
    run = request(prompt)
    env = {**os.environ, "HOME": str(home)}  # its transcript stays in the test's folder
    command = build_command(
        run, ctx.settings, worker_name=ctx.worker_name, base_env=env, cwd=str(home)
    )
    proc = CliProcess(command, run_id=RUN_ID, max_line_bytes=1 << 20, stderr_tail_bytes=4096)
    spawned.append(proc)
    assert isinstance(ctx.store, FakeRunStore)
    publisher = run_publisher(ctx.store, SESSION, RUN_ID)
    seen, cancel = RunObservations(), CancelState()
    proc.spawn()
    meanwhile()
    talk = Interaction(
        proc, publisher, ctx.store, session_id=SESSION, run_id=RUN_ID, timeout_s=60.0
    )
    pump(proc, publisher, seen, cancel, run, ctx, talk)
    publisher.flush(wait=True)
    return seen, cancel, proc.wait()


def test_a_run_that_cannot_start_ends_failed_with_its_reason() -> None:
    store = make_store()
    store.add_run(SESSION, RUN_ID)
    ctx = fake_context(store)
    claim_and_fail(
        ctx,
        session_id=SESSION,
        run_id=RUN_ID,
        code=ErrorCode.INVALID_JOB,
        message="bad payload",
        started=time.monotonic(),
    )
    error, finished = store.envelopes(SESSION)
    assert (error.type, error.data["code"], error.data["message"]) == (
        EventType.ERROR,
        "invalid_job",
        "bad payload",
    )
    assert (finished.type, finished.data["status"]) == (EventType.FINISHED, "failed")
    record = store.run_record(SESSION, RUN_ID)
    assert (record.state, record.final_status) == (RunState.FINISHED, "failed")


def test_a_duplicate_delivery_of_a_running_run_writes_nothing() -> None:
    store = make_store()
    store.running_run(SESSION, RUN_ID)
    claim_and_fail(
        fake_context(store),
        session_id=SESSION,
        run_id=RUN_ID,
        code=ErrorCode.INVALID_JOB,
        message="bad payload",
        started=time.monotonic(),
    )
    assert store.envelopes(SESSION) == []
    assert store.run_record(SESSION, RUN_ID).state is RunState.RUNNING


def test_every_line_the_cli_prints_is_published_in_order(
    spawned: list[CliProcess], tmp_path: Path
) -> None:
    store = make_store()
    ctx = fake_context(store)
    seen, cancel, exit_code = run_pump(ctx, "FAKE: slow n=3 delay_ms=0", spawned, tmp_path)
    envelopes = store.envelopes(SESSION)
    # Seen once (-n 8, a loaded host): no event at all. What the run saw, to explain it.
    assert envelopes, (exit_code, seen, spawned[0].stderr_tail(), store.appends)
    assert envelopes[0].type is EventType.INIT
    assert envelopes[-1].type is EventType.RESULT
    texts = [b["text"] for e in envelopes for b in e.data.get("content", [])]
    assert texts == ["slow 1/3", "slow 2/3", "slow 3/3"]
    assert [e.seq for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert not cancel.is_set()
    _events, status = final_events(seen, exit_code=exit_code, duration_s=1.0, stderr_tail="")
    assert status is RunStatus.SUCCEEDED
    assert seen.claude_session_id


def test_a_cancel_flag_in_the_store_stops_the_cli(
    spawned: list[CliProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.pump._CANCEL_FLAG_POLL_S", 0.05)
    store = make_store()

    def cancel_it() -> None:
        # Only the flag: no control listener runs here, so the pump's poll must hear it.
        assert store.cancel(SESSION, RUN_ID, reason="stop") is CancelOutcome.CANCELLED_RUNNING

    ctx = fake_context(store)
    seen, cancel, exit_code = run_pump(ctx, "FAKE: hang", spawned, tmp_path, cancel_it)
    assert cancel.reason == "cancelled by request"
    assert exit_code == -signal.SIGKILL
    seen.cancel_reason = cancel.reason  # as the runner does once the pump returns
    events, status = final_events(seen, exit_code=exit_code, duration_s=1.0, stderr_tail="")
    assert status is RunStatus.INTERRUPTED
    assert [e.type for e in events] == [EventType.INTERRUPTED, EventType.FINISHED]


def test_a_cli_that_prints_nothing_hits_the_idle_timeout(
    spawned: list[CliProcess], tmp_path: Path
) -> None:
    store = make_store(idle_timeout_s=0.3)
    seen, _cancel, exit_code = run_pump(fake_context(store), "FAKE: hang", spawned, tmp_path)
    assert seen.timeout_reason is not None
    assert "idle_timeout_s" in seen.timeout_reason
    _events, status = final_events(seen, exit_code=exit_code, duration_s=1.0, stderr_tail="")
    assert status is RunStatus.TIMED_OUT
