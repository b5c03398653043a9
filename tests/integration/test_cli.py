"""The `claude-queue` command line, run as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from producer.client import Client
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.zygote import shared_zygote


def _cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return shared_zygote().run(["producer", *args], env=worker_env(settings), input=stdin)


def test_submit_follow_exit_codes_and_json_lines(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    ok = _cli(settings, "submit", "hello", "--session", "cli-ok", "--follow", "--json")
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["type"] == "queued"
    assert lines[-1]["type"] == "finished"
    assert lines[-1]["data"]["status"] == "succeeded"

    failed = _cli(settings, "submit", "FAKE: error_result", "--session", "cli-bad", "--follow")
    assert failed.returncode == 1
    assert "failed" in failed.stdout  # rendered for people, status included

    dashes = _cli(settings, "submit", "--session", "cli-dash", "--follow", "--json", "--", "--x")
    assert dashes.returncode == 0, dashes.stderr
    assert "ECHO:--x" in dashes.stdout


def test_submit_refuses_bad_input_naming_the_field(settings: Settings) -> None:
    bad = _cli(settings, "submit", "hi", "--session", "has spaces")
    assert bad.returncode == 2
    assert "session_id" in bad.stderr
    bad_context = _cli(settings, "submit", "hi", "--session", "s", "--context", "{nope")
    assert bad_context.returncode == 2
    assert "--context" in bad_context.stderr


def test_prompt_from_stdin_tail_and_status(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    queued = _cli(settings, "submit", "-", "--session", "cli-tail", "--json", stdin="from stdin")
    assert queued.returncode == 0, queued.stderr
    run_id = json.loads(queued.stdout)["run_id"]
    status = _cli(settings, "status", "--json")
    assert json.loads(status.stdout)["queued"] == 1
    start_worker()
    done = list(client.stream("cli-tail", stop_at_finish=True, run_id=run_id, timeout_s=60))
    assert done[-1].data["status"] == "succeeded"
    tail = _cli(settings, "tail", "cli-tail", "--no-follow", "--json")
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert lines[-1]["type"] == "finished"
    assert any("ECHO:from stdin" in json.dumps(line) for line in lines)
    after = _cli(settings, "tail", "cli-tail", "--no-follow", "--json", "--after", "2")
    assert [json.loads(line)["seq"] for line in after.stdout.splitlines()] == [
        line["seq"] for line in lines[2:]
    ]
    human = _cli(settings, "tail", "cli-tail", "--no-follow")
    assert "ECHO:from stdin" in human.stdout


def test_help_explains_every_command(settings: Settings) -> None:
    top = _cli(settings, "--help")
    assert top.returncode == 0
    for command in ("submit", "tail", "cancel", "status", "sessions", "session", "worker", "reap"):
        assert command in top.stdout
    assert "CLAUDE_QUEUE_REDIS_URL" in top.stdout


def test_unreachable_redis_is_a_clear_error(settings: Settings) -> None:
    env = worker_env(settings)
    env["CLAUDE_QUEUE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = shared_zygote().run(["producer", "status"], env=env)
    assert done.returncode == 3
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr


def test_worker_pool_runs_jobs_and_stops_on_sigterm(settings: Settings, client: Client) -> None:
    handles = [
        client.submit(session_id=f"pool-{i}", prompt="FAKE: slow n=3 delay_ms=50") for i in range(4)
    ]
    pool = subprocess.Popen(
        [sys.executable, "-m", "producer", "worker", "--processes", "2", "--name", "pool"],
        env=worker_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        finished = [h.wait(timeout_s=60) for h in handles]
        assert [f.status for f in finished] == ["succeeded"] * 4
        started = [
            e.data["worker"]
            for h in handles
            for e in client.history(h.session_id)
            if e.type == "started"
        ]
        assert set(started) <= {"pool-0", "pool-1"}
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=60) == 0
    finally:
        if pool.poll() is None:
            # Its members first: killed alone, the pool would leave them running, taking
            # the jobs of this test process's later tests (same db, same queue).
            with contextlib.suppress(OSError):
                members = Path(f"/proc/{pool.pid}/task/{pool.pid}/children").read_text().split()
                for member in members:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(member), signal.SIGKILL)
            pool.kill()
            pool.wait()


def test_help_lists_the_permission_request_commands(settings: Settings) -> None:
    top = _cli(settings, "--help")
    assert top.returncode == 0
    for command in ("approve", "deny", "requests"):
        assert command in top.stdout
    for command in ("approve", "deny"):
        shown = _cli(settings, command, "--help")
        assert shown.returncode == 0
        assert "SESSION_ID REQUEST_ID" in shown.stdout
        assert "--as NAME" in shown.stdout
    assert "--message" in _cli(settings, "deny", "--help").stdout
    assert "Allow? [y/N]" in _cli(settings, "submit", "--help").stdout
