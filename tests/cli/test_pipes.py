"""`claude-queue` through a pipe, as scripts and log shippers see it (issue 17)."""

from __future__ import annotations

import json
import re

import redis
from rq.registry import FailedJobRegistry

from producer.client import Client
from shared.settings import Settings
from tests.cli.support import ANSI, run
from tests.conftest import WorkerFactory
from tests.helpers import wait_until


def test_a_run_reads_as_a_person_would_and_piped_lines_stay_whole(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    long_answer = "word " * 60 + "END"  # 303 characters: rich would wrap it at 80
    done = run(
        settings, "submit", f'FAKE: text text="{long_answer}"', "--session", "p1", "--follow"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert long_answer in lines  # one line, whole
    assert not ANSI.search(done.stdout)  # no colour, no cursor moves in a pipe
    assert any(
        re.fullmatch(r"\d\d:\d\d:\d\d · queued run [0-9a-f]{8} · profile \S+", ln) for ln in lines
    )
    assert any(ln.startswith("> FAKE: text") for ln in lines)  # the prompt, shown
    model = next(ln for ln in lines if "claude 2.1.330" in ln)
    assert model.endswith("· model claude-sonnet-4-5")  # on one line with its label
    result = next(ln for ln in lines if "result: ok" in ln)
    assert "1 turn ·" in result and "1 turns" not in result
    assert re.search(r"tokens \d+ in / \d+ out", result)
    assert re.search(r"cost \$\d+\.\d{4}", result)
    finished = lines[-1]
    assert re.search(r"■ run [0-9a-f]{8} succeeded in \d", finished)
    assert "None" not in done.stdout


def test_tools_results_thinking_and_rate_limits(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    tool = run(
        settings, "submit", "FAKE: tool command=ls output=a.txt", "--session", "p2", "--follow"
    )
    assert tool.returncode == 0, tool.stderr
    assert "→ Bash  ls" in tool.stdout.splitlines()
    assert "← a.txt" in tool.stdout.splitlines()
    assert "{" not in tool.stdout  # no raw JSON tool input
    assert re.search(r"2 turns · .* \(\$\d+\.\d{4}/turn\)", tool.stdout)

    verbose = run(settings, "submit", "FAKE: tool command=ls", "--session", "p2", "--follow", "-v")
    assert '"command": "ls"' in verbose.stdout  # --verbose: the whole input
    assert "CLI pid" in verbose.stdout

    thinking = run(settings, "submit", "FAKE: thinking", "--session", "p3", "--follow")
    assert "thinking: Let me think about this." in thinking.stdout

    limited = run(
        settings, "submit", "FAKE: ratelimit status=rejected", "--session", "p4", "--follow"
    )
    line = next(ln for ln in limited.stdout.splitlines() if ln.startswith("rate limited"))
    assert re.search(r"resets (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d \((in|.* ago)", line), line
    assert not re.search(r"\d{9,}", line)  # no raw epoch


def test_quiet_prints_only_the_final_answer(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    quiet = run(settings, "submit", "just this", "--session", "q1", "--follow", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "ECHO:just this\n"
    failed = run(settings, "submit", "FAKE: error_result", "--session", "q2", "--follow", "-q")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "API Error" in failed.stderr and "failed" in failed.stderr
    both = run(settings, "submit", "x", "--session", "q3", "--follow", "-q", "-v")
    assert both.returncode == 2


def test_a_replay_shows_the_prompt_and_metadata_is_set_from_the_cli(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    queued = run(
        settings,
        "submit",
        "what was asked",
        "--session",
        "r1",
        "--json",
        "--metadata",
        '{"ticket": 7, "team": "a"}',
        "--meta",
        "team=b",
    )
    assert queued.returncode == 0, queued.stderr
    first = client.history("r1")[0]
    assert first.data["prompt"] == "what was asked"
    assert first.data["metadata"] == {"ticket": 7, "team": "b"}
    start_worker()
    run_id = json.loads(queued.stdout)["run_id"]
    assert list(client.stream("r1", run_id=run_id, stop_at_finish=True, timeout_s=60))
    replay = run(settings, "tail", "r1", "--no-follow")
    assert "> what was asked" in replay.stdout.splitlines()
    for bad in (["--metadata", "[1]"], ["--metadata", "{nope"], ["--meta", "novalue"]):
        refused = run(settings, "submit", "x", "--session", "r2", *bad)
        assert refused.returncode == 2, bad
        assert "--meta" in refused.stderr


def test_unknown_sessions_are_errors_exit_4(settings: Settings) -> None:
    for args in (
        ["tail", "nosuch", "--no-follow"],
        ["tail", "nosuch"],  # without --wait it does not wait forever
        ["session", "show", "nosuch"],
        ["session", "delete", "nosuch"],
        ["cancel", "nosuch"],
        ["approve", "nosuch", "r1"],
        ["deny", "nosuch", "r1"],
        ["requests", "nosuch"],
    ):
        done = run(settings, *args)
        assert done.returncode == 4, (args, done.stderr)
        assert done.stderr.startswith("error: no session 'nosuch'"), args
    bad_id = run(settings, "tail", "has space", "--no-follow")
    assert bad_id.returncode == 2
    refused = run(settings, "tail", "nosuch", "--wait", "--no-follow")
    assert refused.returncode == 2


def test_json_is_one_object_per_line_on_every_command(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    for session_id in ("j1", "j2"):
        done = run(settings, "submit", "hi", "--session", session_id, "--follow", "--json")
        assert done.returncode == 0, done.stderr
    outputs = {
        "sessions": run(settings, "sessions", "--json"),
        "status": run(settings, "status", "--json"),
        "show": run(settings, "session", "show", "j1", "--json"),
        "cancel": run(settings, "cancel", "j1", "--json"),
        "reap": run(settings, "reap", "--json"),
        "delete": run(settings, "session", "delete", "j2", "--json"),
    }
    parsed = {}
    for name, done in outputs.items():
        assert done.returncode == 0, (name, done.stderr)
        objects = [json.loads(line) for line in done.stdout.splitlines()]
        assert objects and all(isinstance(o, dict) for o in objects), name
        parsed[name] = objects
    assert [s["session_id"] for s in parsed["sessions"]] == ["j2", "j1"]
    assert parsed["sessions"][0]["run_count"] == 1
    assert parsed["sessions"][0]["last_status"] == "succeeded"
    assert len(parsed["status"]) == 1 and "failed_last_hour" in parsed["status"][0]
    [show] = parsed["show"]
    assert [r["status"] for r in show["runs"]] == ["succeeded"]
    assert show["runs"][0]["prompt"] == "hi"
    assert parsed["cancel"] == [
        {"outcome": "nothing_to_cancel", "session_id": "j1", "run_id": None}
    ]
    assert parsed["reap"] == [{"lost_runs": 0}]
    assert parsed["delete"][0]["session_id"] == "j2" and parsed["delete"][0]["deleted_keys"] > 0
    assert client.session("j2") is None


def test_tables_for_sessions_status_and_session_show(
    settings: Settings, client: Client, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    start_worker("tables")
    for session_id, prompt in (("t1", "hello"), ("t2", "FAKE: error_result")):
        run(settings, "submit", prompt, "--session", session_id, "--follow")
    listed = run(settings, "sessions").stdout.splitlines()
    assert listed[0].split() == [
        "session",
        "state",
        "runs",
        "last",
        "status",
        "last",
        "activity",
        "cost",
    ]
    rows = {line.split()[0]: line.split() for line in listed[2:]}
    assert rows["t1"][:4] == ["t1", "idle", "1", "succeeded"]
    assert rows["t2"][:4] == ["t2", "idle", "1", "failed"]
    assert "ago" in " ".join(rows["t1"]) or "just now" in " ".join(rows["t1"])

    # `--follow` ends at the run's `finished` event; the worker clears the run from its
    # running entry, and RQ files the failed job, just after it (seen under -n 6).
    failed = FailedJobRegistry(settings.queue_name, connection=redis_client)
    wait_until(lambda: not client.status().running and failed.count == 1)
    status = run(settings, "status").stdout.splitlines()
    assert re.fullmatch(
        r"queue \S+: 0 queued · 0 running · 1 worker · 1 failed in the last hour", status[0]
    )
    assert status[1].split()[:6] == ["worker", "state", "run", "session", "elapsed", "warm"]
    assert status[3].split()[0] == "tables"

    hanging = client.submit(session_id="t3", prompt="FAKE: hang")
    for envelope in hanging.stream(timeout_s=60):
        if envelope.type == "started":
            break
    busy = run(settings, "status").stdout.splitlines()
    assert " 1 running · " in busy[0]
    row = busy[3].split()
    assert row[:4] == ["tables", "busy", hanging.run_id[:8], "t3"]
    assert re.fullmatch(r"\d+\.\d+s|\d+m \d\ds", row[4])  # how long it has been running
    client.cancel("t3", wait=True)

    shown = run(settings, "session", "show", "t2").stdout.splitlines()
    assert shown[0] == "session t2 · idle"
    assert shown[2].split()[:3] == ["run", "status", "queued"]
    assert shown[4].split()[1] == "failed"
    assert shown[4].endswith("FAKE: error_result")
