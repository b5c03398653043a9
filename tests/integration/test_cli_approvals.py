"""`claude-queue approve/deny/requests/cancel --grace`, and answering inline on a terminal.

The worker is simulated with the real store on the real Redis (claim, open_request,
append), so what the CLI does is checked against the recorded decisions. The inline
`Allow? [y/N]` runs the CLI in a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from collections.abc import Iterator
from typing import Any

import pytest

from producer.cli_approvals import default_decider
from producer.client import Client
from shared.encode import encode_body
from shared.events import (
    DecisionReason,
    Event,
    EventData,
    EventType,
    FinishedData,
    PermissionDecisionData,
    PermissionRequestData,
    RunStatus,
)
from shared.runstore import Claimed, Decision, RunStore
from shared.settings import Settings
from tests.conftest import worker_env
from tests.zygote import shared_zygote

SESSION = "cli-ask"
WAIT_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Any:
    return shared_zygote().run(["producer", *args], env=env or worker_env(settings))


class SimulatedWorker:
    """Runs one claimed run the way a worker publishes it, through the real store."""

    def __init__(self, store: RunStore, session_id: str, run_id: str) -> None:
        claim = store.claim(session_id, run_id, worker="w", host="h")
        assert isinstance(claim, Claimed)
        self.store, self.session_id, self.run_id = store, session_id, run_id
        self.token = claim.token
        self.index = 0

    def publish(self, event_type: EventType, data: EventData, *, final: bool = False) -> None:
        self.index += 1
        body = encode_body(
            self.session_id, self.run_id, time.time(), Event(type=event_type, data=data)
        )
        appended = self.store.append(
            self.session_id,
            self.run_id,
            token=self.token,
            first_index=self.index,
            bodies=[body],
            final_status=RunStatus.SUCCEEDED if final else None,
        )
        assert appended.accepted

    def ask(self, request_id: str) -> None:
        """Record a permission request, then publish its event (as the worker does)."""
        request = PermissionRequestData(
            request_id=request_id,
            tool_name="Bash",
            input={"command": f"touch {request_id}"},
            description=f"Create {request_id}",
            expires_at=time.time() + 600,
        )
        self.store.open_request(self.session_id, self.run_id, request)
        self.publish(EventType.PERMISSION_REQUEST, request)

    def decided(self, request_id: str) -> Decision:
        return self.store.decisions(self.session_id, self.run_id, [request_id])[request_id]

    def tell_decision(self, request_id: str) -> None:
        decision = self.decided(request_id)
        self.publish(
            EventType.PERMISSION_DECISION,
            PermissionDecisionData(
                request_id=request_id,
                behavior=decision.behavior,
                message=decision.message,
                decided_by=decision.decided_by,
                reason=decision.reason,
            ),
        )

    def finish(self) -> None:
        self.publish(
            EventType.FINISHED,
            FinishedData(status=RunStatus.SUCCEEDED, exit_code=0, duration_s=1.0),
            final=True,
        )


@pytest.fixture
def asking(client: Client) -> SimulatedWorker:
    """A running run of SESSION (profile `ask`) with open requests r1, r2 and r3."""
    handle = client.submit(session_id=SESSION, prompt="p", profile="ask")
    worker = SimulatedWorker(client.store, SESSION, handle.run_id)
    for request_id in ("r1", "r2", "r3"):
        worker.ask(request_id)
    return worker


def test_approve_and_deny_exit_codes_and_messages(
    settings: Settings, asking: SimulatedWorker
) -> None:
    approved = _cli(settings, "approve", SESSION, "r1", "--as", "alice")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"allowed request r1 (session {SESSION})"
    assert asking.decided("r1") == Decision(behavior="allow", decided_by="alice")

    again = _cli(settings, "deny", SESSION, "r1")
    assert again.returncode == 1
    assert again.stderr.strip() == "error: request r1 was already decided " + (
        "(answered before, or it timed out)"
    )
    assert again.stdout == ""

    denied = _cli(settings, "deny", SESSION, "r2", "--message", "not that", "--json")
    assert denied.returncode == 0, denied.stderr
    assert json.loads(denied.stdout) == {
        "outcome": "delivered",
        "session_id": SESSION,
        "run_id": asking.run_id,
        "request_id": "r2",
    }
    assert asking.decided("r2").message == "not that"

    # No --as: the OS user answers, and a deny without a message names them.
    anonymous = _cli(settings, "deny", SESSION, "r3")
    assert anonymous.returncode == 0, anonymous.stderr
    me = default_decider()
    assert asking.decided("r3") == Decision(
        behavior="deny", message=f"denied by {me}", decided_by=me
    )


def test_unknown_requests_ended_runs_and_bad_ids(
    settings: Settings, asking: SimulatedWorker
) -> None:
    unknown = _cli(settings, "approve", SESSION, "r9", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["outcome"] == "unknown_request"
    assert "has no request r9" in unknown.stderr

    nosuch = _cli(settings, "approve", "cli-nosuch", "r1")
    assert nosuch.returncode == 4  # issue 17: an unknown session is its own error
    assert "error: no session 'cli-nosuch'" in nosuch.stderr
    assert _cli(settings, "deny", "cli-nosuch", "r1").returncode == 4

    for args in (["approve", SESSION, "r1:decision"], ["deny", "*", "r1"]):
        bad = _cli(settings, *args)
        assert bad.returncode == 2
        assert bad.stderr.startswith("error: ")
    too_long = _cli(settings, "deny", SESSION, "r1", "--message", "m" * 3000)
    assert too_long.returncode == 2
    assert "message" in too_long.stderr
    # Nothing above decided anything.
    assert asking.store.decisions(SESSION, asking.run_id, ["r1", "r2", "r3"]) == {}

    env = worker_env(settings)
    env["CLAUDE_QUEUE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    down = _cli(settings, "approve", SESSION, "r1", env=env)
    assert down.returncode == 3
    assert "cannot reach Redis" in down.stderr


def test_requests_and_session_show_list_the_open_ones(
    settings: Settings, client: Client, asking: SimulatedWorker
) -> None:
    assert client.respond(SESSION, "r2", allow=True).delivered
    listed = _cli(settings, "requests", SESSION)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["r1", "Bash"], ["r3", "Bash"]]
    assert '{"command": "touch r1"}' in lines[0]
    assert re.search(r"expires in \d+ s$", lines[0])

    as_json = _cli(settings, "requests", SESSION, "--json")
    found = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(f["request_id"], f["run_id"]) for f in found] == [
        ("r1", asking.run_id),
        ("r3", asking.run_id),
    ]
    assert found[0]["input"] == {"command": "touch r1"}

    table = _cli(settings, "session", "show", SESSION)
    assert table.returncode == 0, table.stderr
    assert "open request r1 · Bash" in table.stdout
    shown = json.loads(_cli(settings, "session", "show", SESSION, "--json").stdout)
    assert [r["request_id"] for r in shown["open_requests"]] == ["r1", "r3"]
    assert shown["open_requests"][0]["tool_name"] == "Bash"
    assert shown["open_requests"][0]["input_preview"] == '{"command": "touch r1"}'
    assert 0 < shown["open_requests"][0]["expires_in_s"] <= 600

    assert _cli(settings, "requests", "cli-nosuch").returncode == 4
    assert _cli(settings, "requests", "*").returncode == 2


def test_cancel_grace_reaches_the_owner_and_is_bounded(
    settings: Settings, client: Client, asking: SimulatedWorker
) -> None:
    for grace in ("-1", "3601", "soon"):
        refused = _cli(settings, "cancel", SESSION, "--grace", grace)
        assert refused.returncode == 2
        assert "--grace" in refused.stderr
    assert asking.store.cancel_requested(SESSION, asking.run_id) is None
    help_text = _cli(settings, "cancel", "--help").stdout
    assert "end its turn" in help_text

    done = _cli(settings, "cancel", SESSION, "--grace", "2.5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "cancelled_running"
    assert asking.store.cancel_requested(SESSION, asking.run_id) == 2.5


class PtyCli:
    """A `claude-queue` process on a pseudo-terminal: what it shows, and typed answers."""

    def __init__(self, settings: Settings, *args: str) -> None:
        env = worker_env(settings, {"COLUMNS": "200", "TERM": "xterm"})
        self.proc, self.master = shared_zygote().on_terminal(["producer", *args], env=env)
        self.raw = b""
        self.cursor = 0

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout_s: float) -> bool:
        """Read what is there; False once the terminal is closed (the process ended)."""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: no process holds the terminal any more
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, wanted: str) -> str:
        """Wait until `wanted` is shown after what earlier expects consumed."""
        deadline = time.monotonic() + WAIT_S
        while (found := self.text.find(wanted, self.cursor)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 1.0)) and wanted not in self.text):
                raise AssertionError(f"never shown: {wanted!r}; shown:\n{self.text}")
        self.cursor = found + len(wanted)
        return self.text

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        """Read to the end and return the exit code."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and self._read(1.0):
            pass
        return self.proc.wait(timeout=WAIT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def pty_cli(settings: Settings) -> Iterator[list[PtyCli]]:
    started: list[PtyCli] = []
    yield started
    for cli in started:
        cli.close()


def test_follow_on_a_terminal_asks_inline(
    settings: Settings, client: Client, pty_cli: list[PtyCli]
) -> None:
    cli = PtyCli(settings, "submit", "hi", "--session", SESSION, "--profile", "ask", "--follow")
    pty_cli.append(cli)
    cli.expect("queued run")
    run_id = client.store.current_run(SESSION)
    assert run_id is not None
    worker = SimulatedWorker(client.store, SESSION, run_id)
    me = default_decider()

    worker.ask("r1")
    cli.expect("? permission Bash — Create r1")
    cli.expect('input {"command": "touch r1"}')
    cli.expect("Allow? [y/N]")
    cli.type("y")
    cli.expect("allowed request r1")
    assert worker.decided("r1") == Decision(behavior="allow", decided_by=me)
    worker.tell_decision("r1")
    cli.expect(f"✓ allowed request r1 by {me}")

    worker.ask("r2")  # an empty answer denies
    cli.expect("Allow? [y/N]")
    cli.type("")
    cli.expect("denied request r2")
    assert worker.decided("r2") == Decision(
        behavior="deny", message=f"denied by {me}", decided_by=me
    )

    worker.ask("r3")  # the answer comes after the request timed out
    cli.expect("Allow? [y/N]")
    timed_out = Decision(behavior="deny", message="timed out", reason=DecisionReason.TIMED_OUT)
    worker.store.decide(SESSION, run_id, "r3", timed_out, notify=False)
    cli.type("y")
    cli.expect("too late: request r3 was already decided")
    assert worker.decided("r3") == timed_out

    worker.finish()
    assert cli.finish() == 0
    assert cli.text.count("Allow? [y/N]") == 3


def test_replayed_and_json_output_never_ask(
    settings: Settings, client: Client, pty_cli: list[PtyCli]
) -> None:
    handle = client.submit(session_id=SESSION, prompt="p", profile="ask")
    worker = SimulatedWorker(client.store, SESSION, handle.run_id)
    worker.ask("r1")
    assert client.respond(SESSION, "r1", allow=True).delivered
    worker.tell_decision("r1")
    worker.ask("r2")  # still open

    as_json = PtyCli(settings, "tail", SESSION, "--no-follow", "--json")
    pty_cli.append(as_json)
    assert as_json.finish() == 0
    assert "Allow?" not in as_json.text
    assert '"type":"permission_request"' in as_json.text.replace(" ", "")

    # No terminal: shown, never asked (stdin is not read at all).
    piped = _cli(settings, "tail", SESSION, "--no-follow")
    assert piped.returncode == 0, piped.stderr
    assert "? permission Bash — Create r2" in piped.stdout
    assert "Allow?" not in piped.stdout

    # On a terminal, only the request still open is asked about.
    human = PtyCli(settings, "tail", SESSION, "--no-follow")
    pty_cli.append(human)
    human.expect("? permission Bash — Create r2")
    human.expect("Allow? [y/N]")
    human.type("n")
    human.expect("denied request r2")
    assert human.finish() == 0
    assert human.text.count("Allow? [y/N]") == 1
    assert worker.decided("r2").behavior == "deny"
    assert client.open_requests(SESSION) == []
