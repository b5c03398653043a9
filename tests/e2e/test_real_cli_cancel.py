"""Cancelling a real CLI while its Bash tool runs a long command.

The CLI starts tool commands with setsid (their own session and process group), so
this is the case where killing the CLI's process group alone would leave orphans.
Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

import time

import pytest

from devtools.fake_anthropic import TextTurn, bash_turn
from producer.cancelling import CancelOutcome
from producer.client import Client
from shared.events import Envelope, EventType
from tests.e2e.conftest import ApiFactory, Stack
from tests.e2e.support import (
    STREAM_TIMEOUT_S,
    Proc,
    blocks,
    cmdline,
    marked_processes,
    types,
)

pytestmark = pytest.mark.e2e

LONG_COMMAND = "echo waiting && sleep 30 && echo done"  # a bare `sleep 30` is refused


def _tool_processes(run_id: str, cli: Proc) -> list[Proc]:
    """The run's processes other than the CLI, once the tool's `sleep 30` runs (bounded)."""
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    while time.monotonic() < deadline:  # no event tells when the tool has spawned: scan /proc
        pids = [pid for pid in marked_processes(run_id) if pid != cli.pid]
        if any(cmdline(pid)[:2] == ["sleep", "30"] for pid in pids):
            return [p for p in map(Proc.of, pids) if p is not None]
    raise AssertionError(f"the tool's `sleep 30` never appeared for run {run_id}")


def test_cancel_while_the_bash_tool_runs_leaves_no_process(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([bash_turn(LONG_COMMAND, "Wait"), TextTurn("Done.")])
    stack.worker(api)
    handle = client.submit(
        session_id="cancel-tool", prompt="Wait a while.", cwd=str(stack.workdir()), profile="bash"
    )
    seen: list[Envelope] = []
    cli: Proc | None = None
    tools: list[Proc] = []
    outcome: CancelOutcome | None = None
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        seen.append(envelope)
        if envelope.type is EventType.STARTED:
            cli = Proc.of(int(envelope.data["pid"]))
            assert cli is not None, "the CLI was gone as soon as it started"
        if outcome is None and blocks([envelope], "tool_use", role="assistant"):
            assert cli is not None and cli.alive()
            tools = _tool_processes(handle.run_id, cli)
            assert all(p.alive() for p in tools)
            outcome = handle.cancel(wait=True, timeout_s=30).outcome

    assert outcome is CancelOutcome.CANCELLED_RUNNING, types(seen)
    kinds = types(seen)
    assert kinds[-2:] == [EventType.INTERRUPTED, EventType.FINISHED], kinds
    assert kinds.count(EventType.FINISHED) == 1
    assert seen[-1].data["status"] == "interrupted"
    assert EventType.RESULT not in kinds  # the tool never finished, the model never answered
    assert len(api.conversation_requests) == 1
    # Nothing of the run is left: not the CLI, not the tool's setsid shell or its sleep.
    assert cli is not None and not cli.alive()
    assert tools and not [p for p in tools if p.alive()]
    assert marked_processes(handle.run_id) == []
