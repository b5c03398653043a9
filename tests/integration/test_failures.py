"""Bad CLI output, failing CLIs and bad payloads: each run still ends with one `finished`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from producer.client import Client
from shared.events import Envelope, EventType
from shared.jobs import JOB_FUNCTION
from shared.settings import Settings
from tests.conftest import FAKE_CLI, WorkerFactory
from tests.helpers import texts
from worker.proctree import is_alive


def _run(client: Client, session_id: str, prompt: str) -> list[Envelope]:
    events = list(client.submit(session_id=session_id, prompt=prompt).stream(timeout_s=90))
    assert [e.type for e in events].count(EventType.FINISHED) == 1
    assert events[-1].type is EventType.FINISHED
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    return events


def _errors(events: list[Envelope]) -> list[dict[str, object]]:
    return [e.data for e in events if e.type is EventType.ERROR]


def test_cli_not_installed_names_the_setting(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    # A worker refuses to start without its CLI (see tests/ops/test_doctor.py), so the
    # CLI goes missing after the worker started: the run still ends, and says why.
    cli = tmp_path / "claude"
    shutil.copy(FAKE_CLI, cli)
    proc = start_worker(settings_override=settings.model_copy(update={"claude_bin": str(cli)}))
    while not client.status().workers:  # past its start-up check of the CLI
        assert proc.poll() is None, "the worker did not start"
        time.sleep(0.05)
    cli.unlink()
    events = _run(client, "nocli", "hi")
    assert events[-1].data["status"] == "failed"
    (error,) = _errors(events)
    assert error["code"] == "cli_not_found"
    assert "CLAUDE_QUEUE_CLAUDE_BIN" in str(error["message"])


def test_nonzero_exit_reports_stderr_tail(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    events = _run(client, "exit", 'FAKE: exit code=3 stderr="fatal: disk on fire"')
    finished = events[-1].data
    assert finished["status"] == "failed"
    assert finished["exit_code"] == 3
    assert "disk on fire" in str(finished["stderr_tail"])
    assert any(
        e["code"] == "cli_exit" and "disk on fire" in str(e["message"]) for e in _errors(events)
    )


def test_garbage_lines_become_defined_events(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    events = _run(client, "garbage", "FAKE: garbage")
    assert events[-1].data["status"] == "succeeded"
    texts = [e.data["text"] for e in events if e.type is EventType.TEXT]
    assert "hello world" in texts
    assert any(e["code"] == "missing_type" for e in _errors(events))


def test_twenty_mib_line_is_refused_and_the_run_goes_on(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    events = _run(client, "huge", "FAKE: huge_line mb=20")
    too_long = [e for e in _errors(events) if e["code"] == "line_too_long"]
    assert len(too_long) == 1
    assert events[-1].data["status"] == "succeeded"
    assert any(e.type is EventType.RESULT for e in events)


@pytest.mark.parametrize(
    ("scenario", "code"),
    [("error_result", "result_error"), ("auth_error", "authentication_failed")],
)
def test_error_results_fail_the_run(
    client: Client, start_worker: WorkerFactory, scenario: str, code: str
) -> None:
    start_worker()
    events = _run(client, scenario, f"FAKE: {scenario}")
    assert events[-1].data["status"] == "failed"
    assert any(e["code"] == code for e in _errors(events))
    if scenario == "auth_error":  # "Not logged in" must not pass for an answer
        assert not any(
            "Not logged in" in str(b.get("text"))
            for e in events
            if e.type is EventType.MESSAGE
            for b in e.data["content"]
        )


def test_cli_hanging_after_result_is_killed_and_keeps_its_status(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    events = _run(client, "linger", "FAKE: hang_after_result")
    assert events[-1].data["status"] == "succeeded"
    cli_pid = next(e.data["pid"] for e in events if e.type is EventType.STARTED)
    assert not is_alive(int(str(cli_pid)))


def test_detached_grandchild_does_not_outlive_its_run(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    events = _run(client, "orphan", "FAKE: grandchild seconds=300 then=exit")
    pid_text = next(t for t in texts(events) if t.startswith("grandchild_pid="))
    grandchild = int(pid_text.split("=")[1])
    try:
        assert events[-1].data["status"] == "succeeded"
        assert not is_alive(grandchild)
    finally:
        if is_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_idle_timeout_kills_a_silent_cli(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker(settings_override=settings.model_copy(update={"idle_timeout_s": 1.0}))
    events = _run(client, "idle", "FAKE: hang")
    assert events[-1].data["status"] == "timed_out"
    assert any(e["code"] == "timeout" for e in _errors(events))


def test_wall_clock_timeout(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    handle = client.submit(session_id="wall", prompt="FAKE: slow n=1000 delay_ms=50", timeout_s=1)
    finished = handle.wait(timeout_s=60)
    assert finished.status == "timed_out"


def test_profile_unknown_to_the_worker_fails_the_run(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    only_readonly = {"readonly": settings.profiles["readonly"]}
    start_worker(settings_override=settings.model_copy(update={"profiles": only_readonly}))
    handle = client.submit(session_id="prof", prompt="hi", profile="bash")
    events = list(handle.stream(timeout_s=60))
    assert events[-1].data["status"] == "failed"
    assert any(e["code"] == "unknown_profile" for e in _errors(events))


def test_malformed_payload_in_the_queue_fails_cleanly_and_the_worker_goes_on(
    client: Client, start_worker: WorkerFactory
) -> None:
    run_id = "0" * 31 + "1"
    bad = {
        "version": 1,
        "run_id": run_id,
        "submitted_at": 0,
        "job": {"session_id": "raw", "prompt": ""},
    }
    client.queue.enqueue_call(JOB_FUNCTION, args=(bad,), job_id=run_id)
    client.queue.enqueue_call(JOB_FUNCTION, args=("not even a dict",))
    start_worker()
    events = list(client.stream("raw", stop_at_finish=True, timeout_s=60))
    assert events[-1].data["status"] == "failed"
    assert any(
        e["code"] == "invalid_job" and "prompt" in str(e["message"]) for e in _errors(events)
    )
    # the worker survived both and still runs good jobs
    follow_up = client.submit(session_id="raw", prompt="still alive?")
    assert follow_up.wait(timeout_s=60).status == "succeeded"
