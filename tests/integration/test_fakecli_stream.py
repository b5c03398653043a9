"""The fake ``claude`` CLI's stream-json input mode, driven as a real subprocess (no Redis).

Prompts, interrupts and permission answers go in as JSON lines on stdin; every stdout
line is read by a thread, and each wait for a line has a generous timeout so that a bug
fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FAKE = Path(__file__).resolve().parents[1] / "fakecli" / "claude"
STREAM_ARGS = ["--input-format", "stream-json", "--output-format=stream-json", "--verbose"]
STDIO = ["--permission-prompt-tool", "stdio"]
LINE_TIMEOUT = 20.0
Json = dict[str, Any]
Start = Callable[..., "Fake"]


def user_line(content: str | list[Json]) -> Json:
    message = {"role": "user", "content": content}
    return {"type": "user", "message": message, "parent_tool_use_id": None, "session_id": "default"}


def interrupt_line(request_id: str) -> Json:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    }


def answer_line(request_id: str, answer: Json) -> Json:
    response = {"subtype": "success", "request_id": request_id, "response": answer}
    return {"type": "control_response", "response": response}


class Fake:
    """One fake CLI process with JSON lines in and out."""

    def __init__(self, args: list[str], home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.stderr_path = home / "stderr.txt"
        full_env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
        full_env.update(HOME=str(home), **(env or {}))
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(FAKE), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=home,
                env=full_env,
            )
        self.lines: queue.Queue[Json | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(json.loads(raw))
        self.lines.put(None)

    def send(self, *objs: Json | str) -> None:
        """Writes the lines in one write (a str is sent as is)."""
        assert self.proc.stdin is not None
        data = "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def next(self) -> Json:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no stdout line within {LINE_TIMEOUT}s; stderr: {self.stderr()}")
        if line is None:
            pytest.fail(f"stdout closed early (exit {self.proc.wait()}); stderr: {self.stderr()}")
        return line

    def until(self, kind: str) -> list[Json]:
        """Lines up to and including the next one of type ``kind``."""
        out = [self.next()]
        while out[-1]["type"] != kind:
            out.append(self.next())
        return out

    def close(self) -> int:
        """Closes stdin; returns the exit code (after checking stdout has nothing more)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=LINE_TIMEOUT)
        self.reader.join(LINE_TIMEOUT)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        assert rest == [], rest
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def transcript(self, session_id: str) -> list[Json]:
        slug = re.sub(r"[^A-Za-z0-9]", "-", str(self.home))
        path = self.home / ".claude" / "projects" / slug / f"{session_id}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    fakes: list[Fake] = []

    def _start(*args: str, env: dict[str, str] | None = None) -> Fake:
        fake = Fake([*STREAM_ARGS, *args], tmp_path, env)
        fakes.append(fake)
        return fake

    yield _start
    for fake in fakes:
        if fake.proc.poll() is None:
            fake.proc.kill()
        fake.proc.wait()
        for pipe in (fake.proc.stdin, fake.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


def texts(lines: list[Json]) -> list[str]:
    return [
        block["text"]
        for line in lines
        if line["type"] == "assistant"
        for block in line["message"]["content"]
        if block["type"] == "text"
    ]


def tool_results(lines: list[Json]) -> list[Json]:
    return [
        block
        for line in lines
        if line["type"] == "user"
        for block in line["message"]["content"]
        if block["type"] == "tool_result"
    ]


def test_a_turn_ends_in_a_result_and_the_process_keeps_reading(start: Start) -> None:
    fake = start()
    fake.send(user_line("hello"))
    lines = fake.until("result")
    assert (lines[0]["type"], lines[0]["subtype"]) == ("system", "init")
    assert texts(lines) == ["ECHO:hello"]
    assert lines[-1]["is_error"] is False
    fake.send(interrupt_line("idle-1"))  # answered: the process is alive and reading
    ack = fake.next()
    assert ack == {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": "idle-1",
            "response": {"still_queued": []},
        },
    }
    assert fake.close() == 0


def test_a_second_user_message_is_a_second_turn_of_the_same_session(start: Start) -> None:
    fake = start()
    fake.send("not json", {"type": "mystery"}, user_line("first"))
    first = fake.until("result")
    fake.send(user_line([{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}]))
    second = fake.until("result")
    sid = first[0]["session_id"]
    assert {line["session_id"] for line in first + second} == {sid}
    assert second[0]["subtype"] == "init"
    assert texts(second) == ["turn=2", "ECHO:second"]
    prompts = [e["message"]["content"] for e in fake.transcript(sid) if e["type"] == "user"]
    assert prompts == ["first", "second"]
    assert fake.close() == 0
    assert "not JSON" in fake.stderr()
    assert "'mystery'" in fake.stderr()


def test_eof_during_a_turn_finishes_the_turn_then_exits(start: Start) -> None:
    fake = start()
    fake.send(user_line("FAKE: slow n=3 delay_ms=10"))
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()
    lines = fake.until("result")
    assert texts(lines) == ["slow 1/3", "slow 2/3", "slow 3/3"]
    assert fake.proc.wait(timeout=LINE_TIMEOUT) == 0


def test_exit_code_of_the_last_turn(start: Start) -> None:
    fake = start()
    fake.send(user_line("FAKE: error_result"))
    assert fake.until("result")[-1]["is_error"] is True
    assert fake.close() == 1


def test_interrupt_during_slow(start: Start) -> None:
    fake = start()
    fake.send(user_line("FAKE: slow n=1000 delay_ms=20"))
    assert texts(fake.until("assistant")) == ["slow 1/1000"]
    fake.send(interrupt_line("int-1"))
    lines = fake.until("control_response")
    assert all(line["type"] == "assistant" for line in lines[:-1])
    assert lines[-1]["response"]["request_id"] == "int-1"
    assert lines[-1]["response"]["subtype"] == "success"
    marker, result = fake.next(), fake.next()
    assert marker["type"] == "user"
    assert marker["message"]["content"] == [
        {"type": "text", "text": "[Request interrupted by user]"}
    ]
    assert result["type"] == "result"
    assert result["subtype"] == "error_during_execution"
    assert result["is_error"] is True
    assert result["terminal_reason"] == "aborted_streaming"
    for key in ("session_id", "num_turns", "usage", "total_cost_usd", "duration_ms", "uuid"):
        assert key in result
    assert result["permission_denials"] == []
    assert fake.close() == 0
    entries = fake.transcript(result["session_id"])
    assert entries[-1]["message"]["content"][0]["text"] == "[Request interrupted by user]"
    assert entries[-2]["type"] == "assistant"  # the answers printed before stay


def test_interrupt_keeps_the_streamed_part_of_an_answer(start: Start) -> None:
    fake = start("--include-partial-messages")
    fake.send(user_line("FAKE: partial n=1000 delay_ms=20"))
    lines = fake.until("stream_event")
    while lines[-1]["event"]["type"] != "content_block_delta":
        lines.append(fake.next())
    fake.send(interrupt_line("int-2"))
    lines += fake.until("result")
    streamed = "".join(
        line["event"]["delta"]["text"]
        for line in lines
        if line["type"] == "stream_event" and line["event"]["type"] == "content_block_delta"
    )
    assert texts(lines) == []  # the whole answer never came
    entries = fake.transcript(lines[-1]["session_id"])
    assert entries[-2]["type"] == "assistant"
    assert entries[-2]["message"]["content"] == [{"type": "text", "text": streamed}]
    assert fake.close() == 0


def test_a_turn_after_an_interrupt(start: Start) -> None:
    fake = start()
    fake.send(user_line("FAKE: hang"))
    assert fake.next()["subtype"] == "init"
    fake.send(interrupt_line("int-3"))
    assert [line["type"] for line in fake.until("result")] == ["control_response", "user", "result"]
    fake.send(user_line("FAKE: text text=back"))
    assert texts(fake.until("result")) == ["back"]
    assert fake.close() == 0


def test_ask_allow_runs_the_tool(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO)
    fake.send(user_line(f"FAKE: ask tool=Bash command='touch /x/y' touch={target}"))
    lines = fake.until("control_request")
    (tool_use,) = lines[-2]["message"]["content"]
    assert (tool_use["type"], tool_use["name"]) == ("tool_use", "Bash")
    assert tool_use["id"].startswith("toolu_")
    request = lines[-1]["request"]
    assert request == {
        "subtype": "can_use_tool",
        "tool_name": "Bash",
        "display_name": "Bash",
        "input": {"command": "touch /x/y", "description": "Run a command"},
        "description": "Run a command",
        "permission_suggestions": [
            {
                "type": "addRules",
                "rules": [{"toolName": "Bash", "ruleContent": "touch /x/y"}],
                "behavior": "allow",
                "destination": "localSettings",
            }
        ],
        "tool_use_id": tool_use["id"],
    }
    assert not target.exists()
    allow = {"behavior": "allow", "updatedInput": request["input"]}
    fake.send(answer_line(lines[-1]["request_id"], allow))
    lines = fake.until("result")
    (result_block,) = tool_results(lines)
    assert result_block["is_error"] is False
    assert result_block["content"] == "(Bash completed with no output)"
    assert texts(lines) == ["allowed: Bash"]
    assert lines[-1]["permission_denials"] == []
    assert target.read_text() == "1 touch /x/y\n"
    assert fake.close() == 0


def test_ask_deny_carries_the_message(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO)
    fake.send(user_line(f"FAKE: ask touch={target}"))
    request = fake.until("control_request")[-1]
    deny = {"behavior": "deny", "message": "not today"}
    fake.send(answer_line(request["request_id"], deny))
    lines = fake.until("result")
    (result_block,) = tool_results(lines)
    assert (result_block["is_error"], result_block["content"]) == (True, "not today")
    assert texts(lines) == ["denied: not today"]
    (denial,) = lines[-1]["permission_denials"]
    assert denial["tool_name"] == "Bash"
    assert denial["tool_use_id"] == request["request"]["tool_use_id"]
    assert denial["tool_input"] == request["request"]["input"]
    assert not target.exists()
    assert fake.close() == 0


def test_without_a_prompt_tool_the_tool_is_refused(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start()
    fake.send(user_line(f"FAKE: ask touch={target}"))
    lines = fake.until("result")
    assert "control_request" not in [line["type"] for line in lines]
    (result_block,) = tool_results(lines)
    assert result_block["is_error"] is True
    assert result_block["content"] == (
        "Claude requested permissions to use Bash, but you haven't granted it yet."
    )
    assert texts(lines) == ["refused: Bash"]
    assert len(lines[-1]["permission_denials"]) == 1
    assert not target.exists()
    assert fake.close() == 0


def test_an_allowed_tool_needs_no_request(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO, "--allowed-tools=Read,Bash")
    fake.send(user_line(f"FAKE: ask touch={target}"))
    lines = fake.until("result")
    assert "control_request" not in [line["type"] for line in lines]
    assert texts(lines) == ["allowed: Bash"]
    assert target.is_file()
    assert fake.close() == 0


def test_two_requests_one_after_another(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO)
    fake.send(user_line(f"FAKE: ask n=2 command=go touch={target}"))
    first = fake.until("control_request")[-1]
    fake.send(answer_line("someone-else", {"behavior": "deny", "message": "wrong id"}))
    fake.send(answer_line(first["request_id"], {"behavior": "allow", "updatedInput": {}}))
    second = fake.until("control_request")[-1]
    assert second["request_id"] != first["request_id"]
    assert second["request"]["tool_use_id"] != first["request"]["tool_use_id"]
    fake.send(answer_line(second["request_id"], {"behavior": "deny", "message": "no more"}))
    lines = fake.until("result")
    assert [r["is_error"] for r in tool_results(lines)] == [True]
    assert texts(lines) == ["allowed: Bash\ndenied: no more"]
    assert lines[-1]["num_turns"] == 3
    assert target.read_text() == "1 go\n"
    assert fake.close() == 0
    assert "'someone-else'" in fake.stderr()


def test_interrupt_while_waiting_for_an_answer(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO)
    fake.send(user_line(f"FAKE: ask touch={target}"))
    fake.until("control_request")
    fake.send(interrupt_line("int-4"))
    lines = fake.until("result")
    assert [line["type"] for line in lines] == ["control_response", "user", "result"]
    assert lines[-1]["terminal_reason"] == "aborted_streaming"
    assert not target.exists()
    assert fake.close() == 0


def test_interrupt_ignore_gets_no_ack(start: Start, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    fake = start(*STDIO)
    fake.send(user_line(f"FAKE: ask touch={target} interrupt=ignore"))
    request = fake.until("control_request")[-1]
    # Both lines in one write: the interrupt is read while the turn waits for the answer.
    fake.send(interrupt_line("int-5"), answer_line(request["request_id"], {"behavior": "allow"}))
    lines = fake.until("result")
    assert "control_response" not in [line["type"] for line in lines]
    assert (lines[-1]["subtype"], texts(lines)) == ("success", ["allowed: Bash"])
    assert target.is_file()
    assert fake.close() == 0


def test_eof_while_waiting_for_an_answer_dies_without_a_result(start: Start) -> None:
    fake = start(*STDIO)
    fake.send(user_line("FAKE: ask"))
    fake.until("control_request")
    assert fake.close() == 1


def test_the_prompt_is_logged_as_stdin(start: Start, tmp_path: Path) -> None:
    log = tmp_path / "argv.jsonl"
    fake = start("--model", "m1", env={"FAKE_CLAUDE_ARGV_LOG": str(log)})
    fake.send(user_line("secret prompt"))
    fake.until("result")
    fake.send(user_line("second prompt"))
    fake.until("result")
    assert fake.close() == 0
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["stdin"] == "secret prompt"
    assert entry["input_format"] == "stream-json"
    assert entry["argv"] == [*STREAM_ARGS, "--model", "m1"]


def test_print_mode_is_unchanged(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    env["HOME"] = str(tmp_path)
    base = [sys.executable, str(FAKE), "--output-format=stream-json", "--verbose"]
    proc = subprocess.run(
        [*base, "-p"],
        input=b"hi",
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["system", "assistant", "result"]
    assert texts(lines) == ["ECHO:hi"]
    no_p = subprocess.run(base, input=b"hi", capture_output=True, env=env, timeout=30, check=False)
    assert (no_p.returncode, no_p.stdout) == (1, b"")
