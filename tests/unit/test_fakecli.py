"""Tests for the fake ``claude`` CLI in tests/fakecli (run as a real subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FAKE = Path(__file__).resolve().parents[1] / "fakecli" / "claude"
BASE_ARGS = ["-p", "--output-format=stream-json", "--verbose"]


def run_fake(
    prompt: str | bytes,
    *args: str,
    home: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    data = prompt.encode() if isinstance(prompt, str) else prompt
    full_env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    # Put this interpreter first on PATH so the shebang's `env python3` skips slow shims.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    full_env.update(HOME=str(home), PATH=path, **(env or {}))
    return subprocess.run(
        [str(FAKE), *args], input=data, capture_output=True, cwd=cwd or home,
        env=full_env, timeout=30, check=False,
    )  # fmt: skip


def events(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def texts(evs: list[dict[str, Any]]) -> list[str]:
    return [
        block["text"]
        for ev in evs if ev["type"] == "assistant"
        for block in ev["message"]["content"] if block["type"] == "text"
    ]  # fmt: skip


def slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


def test_echo_is_verbatim_even_for_dash_prompts(tmp_path: Path) -> None:
    prompt = "--model=evil --resume=x\n  indented é 日本\r\ntrailing  \n\n"
    proc = run_fake(prompt, *BASE_ARGS, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc)
    init, result = evs[0], evs[-1]
    assert init["type"] == "system"
    assert init["subtype"] == "init"
    assert init["model"] == "claude-sonnet-4-5"
    assert init["permissionMode"] == "default"
    assert init["claude_code_version"] == "2.1.330"
    assert texts(evs) == ["ECHO:" + prompt]
    assert result["type"] == "result"
    assert result["is_error"] is False
    assert result["result"] == "ECHO:" + prompt
    assert {ev["session_id"] for ev in evs} == {init["session_id"]}


def test_options_in_both_forms(tmp_path: Path) -> None:
    args = ["-p", "--output-format", "stream-json", "--verbose", "--model", "claude-x",
            "--permission-mode=plan", "--allowed-tools=Bash,Read", "--max-turns", "3",
            "--append-system-prompt=be brief"]  # fmt: skip
    proc = run_fake("hi", *args, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    init = events(proc)[0]
    assert (init["model"], init["permissionMode"]) == ("claude-x", "plan")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*BASE_ARGS, "--x"], "error: unknown option '--x'"),
        ([*BASE_ARGS, "--bogus=1"], "error: unknown option '--bogus=1'"),
        (
            ["-p", "--output-format=stream-json"],
            "Error: When using --print, --output-format=stream-json requires --verbose",
        ),
    ],
)
def test_bad_command_lines_are_rejected(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_fake("hi", *args, home=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert message in proc.stderr.decode()


def test_resume_of_missing_session_fails_like_the_real_cli(tmp_path: Path) -> None:
    sid = "0b5e5f0e-1111-4222-8333-444455556666"
    proc = run_fake("hi", *BASE_ARGS, f"--resume={sid}", home=tmp_path)
    assert proc.returncode == 1
    (result,) = events(proc)  # no init line: one error result, as the real CLI prints
    assert result["type"] == "result"
    assert result["subtype"] == "error_during_execution"
    assert result["is_error"] is True
    assert result["errors"] == [f"No conversation found with session ID: {sid}"]
    assert proc.stderr.decode().strip() == f"No conversation found with session ID: {sid}"


def test_transcript_and_resume_turns(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work_dir.v2"
    home.mkdir()
    cwd.mkdir()
    first = events(run_fake("first", *BASE_ARGS, home=home, cwd=cwd))
    sid = first[0]["session_id"]
    transcript = home / ".claude" / "projects" / slug(cwd) / f"{sid}.jsonl"
    assert transcript.is_file()
    assert "-work-dir-v2" in transcript.parent.name
    for turn in (2, 3):
        proc = run_fake("again", *BASE_ARGS, "--resume", sid, home=home, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        evs = events(proc)
        assert {ev["session_id"] for ev in evs} == {sid}
        assert texts(evs) == [f"turn={turn}", "ECHO:again"]
        assert evs[-1]["result"] == "ECHO:again"
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    prompts = [ln["message"]["content"] for ln in lines if ln["type"] == "user"]
    assert prompts == ["first", "again", "again"]


def test_partial_messages_concatenate_to_the_text(tmp_path: Path) -> None:
    proc = run_fake("stream me please", *BASE_ARGS, "--include-partial-messages", home=tmp_path)
    evs = events(proc)
    inner = [ev["event"] for ev in evs if ev["type"] == "stream_event"]
    assert [e["type"] for e in inner][:2] == ["message_start", "content_block_start"]
    assert [e["type"] for e in inner][-2:] == ["message_delta", "message_stop"]
    deltas = [e["delta"]["text"] for e in inner if e["type"] == "content_block_delta"]
    assert "".join(deltas) == "ECHO:stream me please"


def test_partial_scenario_streams_without_the_flag(tmp_path: Path) -> None:
    evs = events(run_fake("FAKE: partial n=7", *BASE_ARGS, home=tmp_path))
    deltas = [ev for ev in evs if ev["type"] == "stream_event"
              and ev["event"]["type"] == "content_block_delta"]  # fmt: skip
    assert len(deltas) == 7
    assert "".join(d["event"]["delta"]["text"] for d in deltas) == evs[-1]["result"]


def test_garbage_lines(tmp_path: Path) -> None:
    proc = run_fake("FAKE: garbage", *BASE_ARGS, home=tmp_path)
    assert proc.returncode == 0
    lines = proc.stdout.split(b"\n")
    for odd in (b"hello world", b"{not json", b"[1,2,3]", b'{"type":"mystery"}', b""):
        assert odd in lines
    undecodable = [ln for ln in lines if not ln.isascii()]
    assert len(undecodable) == 1
    with pytest.raises(UnicodeDecodeError):
        undecodable[0].decode("utf-8")
    parsed = [json.loads(ln) for ln in lines if ln.startswith(b"{") and ln != b"{not json"]
    assert any(isinstance(obj, dict) and "type" not in obj for obj in parsed)
    assert parsed[-1]["type"] == "result"


@pytest.mark.parametrize(
    ("directive", "code", "turns"),
    [
        ("FAKE: text text='hello there'", 0, 1),
        ("FAKE: thinking", 0, 1),
        ("FAKE: tool", 0, 2),
        ("FAKE: ratelimit status=allowed_warning", 0, 1),
        ("FAKE: error_result", 1, 1),
        ("FAKE: auth_error", 1, 1),
        ("FAKE: text exit=5", 5, 1),
        ("FAKE: big_answer kb=64", 0, 1),
        ("FAKE: huge_line mb=1.5", 0, 1),
        ("FAKE: slow n=3 delay_ms=0", 0, 1),
        ("FAKE: many n=25 rate=0 size=100", 0, 1),
        ("FAKE: mixed n=300 seed=2", 0, 1),
        ("FAKE: sleep seconds=0", 0, 1),
    ],
)
def test_scenarios_end_with_a_result(tmp_path: Path, directive: str, code: int, turns: int) -> None:
    proc = run_fake(f"please\n{directive}\n", *BASE_ARGS, home=tmp_path)
    assert proc.returncode == code, proc.stderr
    evs = events(proc)
    assert evs[0]["type"] == "system"
    assert evs[-1]["type"] == "result"
    assert evs[-1]["is_error"] is (code == 1)
    assert evs[-1]["num_turns"] == turns


def test_specific_scenario_shapes(tmp_path: Path) -> None:
    auth = events(run_fake("FAKE: auth_error", *BASE_ARGS, home=tmp_path))
    assert auth[1]["error"] == "authentication_failed"
    assert auth[-1]["result"] == "Not logged in \u00b7 Please run /login"
    limit = events(run_fake("FAKE: ratelimit", *BASE_ARGS, home=tmp_path))[1]
    assert limit["type"] == "rate_limit_event"
    assert limit["rate_limit_info"]["status"] == "rejected"
    huge = run_fake("FAKE: huge_line mb=2", *BASE_ARGS, home=tmp_path).stdout.splitlines()
    assert max(len(line) for line in huge) > 2 * 1024 * 1024
    many = events(run_fake("FAKE: many n=5 rate=0", *BASE_ARGS, home=tmp_path))
    assert all(t.startswith("t=") for t in texts(many)[:5])
    mixed = events(run_fake("FAKE: mixed n=200", *BASE_ARGS, home=tmp_path))
    assert len(mixed) == 200 + 3
    assert {ev["type"] for ev in mixed} == {"system", "stream_event", "assistant", "user", "result"}


def test_exit_scenario(tmp_path: Path) -> None:
    proc = run_fake('FAKE: exit code=4 stderr="disk on fire"', *BASE_ARGS, home=tmp_path)
    assert proc.returncode == 4
    assert proc.stderr.decode().strip() == "disk on fire"
    assert [ev["type"] for ev in events(proc)] == ["system"]


def test_argv_log(tmp_path: Path) -> None:
    log = tmp_path / "argv.jsonl"
    env = {"FAKE_CLAUDE_ARGV_LOG": str(log), "MLFLOW_RUN_ID": "r1", "CLAUDE_QUEUE_TEST_X": "1"}
    run_fake("FAKE: text", *BASE_ARGS, "--model=m", home=tmp_path, env=env)
    run_fake("x", "--nope", home=tmp_path, env=env)
    good, bad = (json.loads(line) for line in log.read_text().splitlines())
    assert good["argv"] == [*BASE_ARGS, "--model=m"]
    assert good["stdin"] == "FAKE: text"
    assert isinstance(good["pid"], int)
    assert good["env_extra"]["MLFLOW_RUN_ID"] == "r1"
    assert good["env_extra"]["CLAUDE_QUEUE_TEST_X"] == "1"
    assert "HOME" not in good["env_extra"]
    assert (bad["argv"], bad["stdin"]) == (["--nope"], None)


def test_grandchild_runs_in_its_own_session(tmp_path: Path) -> None:
    proc = run_fake("FAKE: grandchild seconds=60 then=exit", *BASE_ARGS, home=tmp_path)
    match = re.search(r"grandchild_pid=(\d+)", proc.stdout.decode())
    assert match is not None, proc.stdout
    pid = int(match.group(1))
    try:
        assert proc.returncode == 0
        evs = events(proc)
        assert [ev["type"] for ev in evs] == ["system", "assistant", "user", "assistant", "result"]
        assert os.getsid(pid) == pid
        assert os.getsid(pid) != os.getsid(0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
