"""Soft cancel: the worker asks the CLI to end its turn, and kills it only after the grace.

Real workers, the fake CLI in stream-json input mode, real Redis. The fake honours an
interrupt in `slow` (ack, interrupt marker, an aborted result, then it exits when stdin
closes); `interrupt=ignore` makes it drop interrupts, so only the kill can end it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.cancelling import CancelOutcome
from producer.client import Client, RunHandle
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import Proc, texts
from worker.proctree import run_processes, start_ticks

STREAM_TIMEOUT_S = 60.0
INTERRUPTED_TEXT = "[Request interrupted by user]"
SIGKILLED = -9


class Run:
    """A run's stream consumed step by step, and the CLI learned from `started`."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.stream: Iterator[Envelope] = handle.stream(timeout_s=STREAM_TIMEOUT_S)
        self.events: list[Envelope] = []
        self.cli: Proc | None = None
        self.alive_at_finish: list[Proc] = []

    def _take(self, envelope: Envelope) -> None:
        self.events.append(envelope)
        if envelope.type is EventType.STARTED:
            pid = int(envelope.data["pid"])
            self.cli = Proc(pid, start_ticks(pid))
        elif envelope.type is EventType.FINISHED and self.cli is not None:
            # The worker ends the whole tree before it publishes `finished`.
            self.alive_at_finish = [self.cli] if self.cli.alive() else []

    def until_texts(self, count: int) -> None:
        """Consume until the CLI has printed `count` text blocks."""
        for envelope in self.stream:
            self._take(envelope)
            if len(texts(self.events)) >= count:
                return
        raise AssertionError(f"the stream ended early: {self.types()}")

    def until(self, event_type: EventType) -> None:
        for envelope in self.stream:
            self._take(envelope)
            if envelope.type is event_type:
                return
        raise AssertionError(f"the stream ended before {event_type}: {self.types()}")

    def to_end(self) -> dict[str, Any]:
        """Consume the rest; the data of the one `finished` event, which comes last."""
        for envelope in self.stream:
            self._take(envelope)
        types = self.types()
        assert types.count(EventType.FINISHED) == 1, types
        assert types[-1] is EventType.FINISHED, types
        return dict(self.events[-1].data)

    def types(self) -> list[EventType | str]:
        return [e.type for e in self.events]


@pytest.fixture
def pids() -> Iterator[list[Proc]]:
    """CLIs the tests learned; any still alive at the end is SIGKILLed, pass or fail."""
    known: list[Proc] = []
    yield known
    for proc in known:
        proc.kill()


def _start(client: Client, pids: list[Proc], session_id: str, prompt: str) -> Run:
    run = Run(client.submit(session_id=session_id, prompt=prompt))
    run.until(EventType.STARTED)
    assert run.cli is not None and run.cli.alive()
    pids.append(run.cli)
    return run


def _assert_interrupted_once(run: Run, finished: dict[str, Any]) -> None:
    assert finished["status"] == "interrupted", finished
    assert run.types().count(EventType.INTERRUPTED) == 1, run.types()
    logged = run.handle.client.history(run.handle.session_id)
    mine = [e for e in logged if e.run_id == run.handle.run_id]
    assert [e.data["status"] for e in mine if e.type is EventType.FINISHED] == ["interrupted"]
    assert run.alive_at_finish == []
    assert run_processes(run.handle.run_id) == set()


def _log_events(log_file: Path) -> list[str]:
    names = []
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            names.append(str(entry.get("event")))
    return names


def _transcript_texts(config_dir: Path, claude_session_id: str) -> list[str]:
    """Every text block of the fake CLI's transcript of this conversation."""
    (path,) = config_dir.glob(f"projects/*/{claude_session_id}.jsonl")
    found = []
    for line in path.read_text().splitlines():
        content = json.loads(line)["message"]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        found += [str(b["text"]) for b in blocks if b.get("type") == "text"]
    return found


def test_soft_cancel_ends_the_turn_and_the_session_resumes(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    pids: list[Proc],
    tmp_path: Path,
) -> None:
    config_dir = tmp_path / "claude-config"  # where the fake CLI keeps its transcripts
    start_worker("wsoft", env={"CLAUDE_CONFIG_DIR": str(config_dir)})
    run = _start(client, pids, "soft", "FAKE: slow n=50 delay_ms=100")
    run.until_texts(3)

    result = run.handle.cancel(grace_s=10, wait=True, timeout_s=30)
    assert result.outcome is CancelOutcome.CANCELLED_RUNNING
    finished = run.to_end()

    _assert_interrupted_once(run, finished)
    # The CLI took the interrupt: it printed the marker and an aborted result, then
    # exited by itself once stdin closed. A kill would show as -9.
    assert finished["exit_code"] == 0, finished
    assert INTERRUPTED_TEXT in texts(run.events)
    (aborted,) = [e for e in run.events if e.type is EventType.RESULT]
    assert aborted.data["is_error"] is True
    said = [t for t in texts(run.events) if t.startswith("slow ")]
    assert 3 <= len(said) < 50
    assert "soft_interrupt_sent" in _log_events(tmp_path / "wsoft.log")

    # The next run resumes the conversation, whose transcript kept the partial answer.
    claude_session_id = str(finished["claude_session_id"])
    transcript = _transcript_texts(config_dir, claude_session_id)
    assert transcript[transcript.index(said[0]) :][: len(said)] == said
    assert INTERRUPTED_TEXT in transcript
    later = Run(client.submit(session_id="soft", prompt="after the interrupt"))
    later_finished = later.to_end()
    assert later_finished["status"] == "succeeded"
    assert later_finished["claude_session_id"] == claude_session_id
    assert "turn=2" in texts(later.events)
    assert _transcript_texts(config_dir, claude_session_id)[-1] == "ECHO:after the interrupt"


def test_soft_cancel_kills_a_cli_that_ignores_the_interrupt(
    client: Client, start_worker: WorkerFactory, pids: list[Proc], tmp_path: Path
) -> None:
    start_worker("wdeaf")
    run = _start(client, pids, "soft-deaf", "FAKE: hang interrupt=ignore")
    run.until(EventType.INIT)

    result = run.handle.cancel(grace_s=1, wait=True, timeout_s=30)
    assert result.outcome is CancelOutcome.CANCELLED_RUNNING
    finished = run.to_end()

    _assert_interrupted_once(run, finished)
    assert finished["exit_code"] == SIGKILLED, finished
    assert INTERRUPTED_TEXT not in texts(run.events)
    # It was asked first: the interrupt went out before the grace ran out.
    assert "soft_interrupt_sent" in _log_events(tmp_path / "wdeaf.log")


def test_hard_cancel_during_the_grace_kills_at_once(
    client: Client, start_worker: WorkerFactory, pids: list[Proc], tmp_path: Path
) -> None:
    start_worker("wesc")
    run = _start(client, pids, "soft-escalate", "FAKE: hang interrupt=ignore")
    run.until(EventType.INIT)

    soft = run.handle.cancel(grace_s=600, wait=False)
    assert soft.outcome is CancelOutcome.CANCELLED_RUNNING
    _await_log_event(tmp_path / "wesc.log", "soft_interrupt_sent")
    assert run.cli is not None and run.cli.alive(), "within its grace the CLI still runs"

    # A hard cancel now: the owner ends the run within the usual wait, not after 600 s.
    hard = run.handle.cancel(wait=True, timeout_s=10)
    assert hard.outcome is CancelOutcome.CANCELLED_RUNNING
    finished = run.to_end()

    _assert_interrupted_once(run, finished)
    assert finished["exit_code"] == SIGKILLED, finished


def _await_log_event(log_file: Path, name: str) -> None:
    """Wait until the worker has logged `name` (it writes its log line by line)."""
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    pause = threading.Event()  # never set: only its timed wait is used
    while name not in _log_events(log_file):
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker never logged {name}")
        pause.wait(0.02)
