"""Soft cancels of a real CLI: the turn is interrupted, or the tree killed after the grace.

`cancel(grace_s=...)` makes the worker write an `interrupt` control request to the CLI;
the real CLI ends its turn (a `[Request interrupted by user]` user message and an error
result) and the run ends `interrupted`, its conversation intact for the next run. A CLI
that never hears the interrupt (tests/e2e/ignore_interrupt drops it) is killed, tree and
all, once the grace has passed. Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.fake_anthropic import TextTurn, slow_text_turn
from producer.cancelling import CancelOutcome, CancelResult
from producer.client import Client, RunHandle
from shared.events import Envelope, EventType, StreamEventData
from tests.e2e.conftest import CLAUDE_BIN, ApiFactory, Stack
from tests.e2e.support import (
    STREAM_TIMEOUT_S,
    Proc,
    assistant_texts,
    blocks,
    claude_session_id,
    cmdline,
    data_of,
    descendants,
    error_codes,
    errors,
    finished,
    marked_processes,
    run_events,
    types,
    user_texts,
)

pytestmark = pytest.mark.e2e

INTERRUPTED_MARKER = "[Request interrupted by user]"
ANSWER = "one two three four five six seven eight"
CHUNKS = 8
IGNORE_INTERRUPT = Path(__file__).resolve().parent / "ignore_interrupt"


def _text_deltas(events: list[Envelope]) -> list[str]:
    deltas = []
    for envelope in events:
        if envelope.type is EventType.STREAM_EVENT:
            delta = StreamEventData.model_validate(envelope.data).text_delta
            if delta is not None:
                deltas.append(delta)
    return deltas


def _cancel_at_first_delta(
    handle: RunHandle, grace_s: float, on_cli: Callable[[int], None] | None = None
) -> tuple[list[Envelope], CancelResult]:
    """Stream the run; once its first text delta arrives, cancel it with `grace_s`.

    `on_cli(started_pid)` is called just before the cancel, while the run is alive.
    """
    events: list[Envelope] = []
    cancelled: CancelResult | None = None
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        events.append(envelope)
        if cancelled is None and _text_deltas([envelope]):
            (started,) = data_of(events, EventType.STARTED)
            if on_cli is not None:
                on_cli(int(started["pid"]))
            cancelled = handle.cancel(grace_s=grace_s)
    kinds = types(events)
    assert cancelled is not None, f"no text delta arrived: {kinds}"
    assert kinds[-1] is EventType.FINISHED, kinds
    assert kinds.count(EventType.FINISHED) == 1, kinds
    return events, cancelled


def _messages(request: dict[str, Any], role: str) -> list[str]:
    """The text of each `role` message of a model request, its text blocks joined."""
    texts = []
    for message in request.get("messages", []):
        if message.get("role") != role:
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.append(
                "".join(
                    str(b.get("text", ""))
                    for b in content
                    if isinstance(b, dict) and b.get("type") == "text"
                )
            )
    return texts


def test_soft_cancel_interrupts_the_turn_and_the_conversation_goes_on(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([slow_text_turn(ANSWER, chunks=CHUNKS, delay=0.5), TextTurn("second answer")])
    stack.worker(api)
    handle = client.submit(
        session_id="soft",
        prompt="Count to eight.",
        cwd=str(stack.workdir()),
        include_partial_messages=True,
    )
    cli: list[Proc | None] = []

    events, cancelled = _cancel_at_first_delta(
        handle, grace_s=10, on_cli=lambda pid: cli.append(Proc.of(pid))
    )

    kinds = types(events)
    assert cancelled.outcome is CancelOutcome.CANCELLED_RUNNING
    done = finished(events)
    assert done["status"] == "interrupted", done
    assert kinds[-2:] == [EventType.INTERRUPTED, EventType.FINISHED], kinds
    # The CLI heard the interrupt and ended its turn itself (no kill without a result).
    assert INTERRUPTED_MARKER in [b["text"] for b in blocks(events, "text", role="user")]
    (result,) = data_of(events, EventType.RESULT)
    assert result["is_error"] is True, result
    # Its error result is the interrupt's doing, not a failure to report.
    assert "result_error" not in error_codes(events), errors(events)
    # After its result it was given the result grace to exit by itself, not killed.
    assert done["exit_code"] != -signal.SIGKILL, done
    # The interrupt cut the stream short.
    deltas = _text_deltas(events)
    assert deltas and len(deltas) < CHUNKS, deltas
    partial = "".join(deltas)
    assert ANSWER.startswith(partial) and partial != ANSWER, partial
    assert cli and cli[0] is not None, "the CLI was gone before the cancel"
    assert not cli[0].alive(), "the CLI outlived its run"
    assert marked_processes(handle.run_id) == []

    second = run_events(client.submit(session_id="soft", prompt="Go on."))

    assert finished(second)["status"] == "succeeded"
    assert claude_session_id(second) == claude_session_id(events)
    assert assistant_texts(second) == ["second answer"]
    request = api.conversation_requests[-1]
    asked = user_texts(request)
    assert "Count to eight." in asked
    assert asked[-1] == "Go on."
    # The model sees what it had said before the interrupt, then the interrupt itself.
    said = _messages(request, "assistant")
    assert partial in said, json.dumps(request["messages"])[-2000:]
    assert INTERRUPTED_MARKER in asked
    assert asked.index(INTERRUPTED_MARKER) > asked.index("Count to eight.")


def test_cli_that_ignores_the_interrupt_is_killed_after_the_grace(
    client: Client, stack: Stack, fake_api: ApiFactory, tmp_path: Path
) -> None:
    chunks = 40  # 20 s of streaming: far more than the 1 s grace
    api = fake_api([slow_text_turn(ANSWER * 5, chunks=chunks, delay=0.5)])
    dropped = tmp_path / "dropped.jsonl"
    settings = stack.settings_for(api)
    settings = settings.model_copy(
        update={
            "claude_bin": str(IGNORE_INTERRUPT),
            "extra_env": {
                **settings.extra_env,
                "CQ_REAL_CLAUDE": str(CLAUDE_BIN),
                "CQ_DROPPED_LOG": str(dropped),
            },
        }
    )
    stack.start_worker(settings_override=settings)
    handle = client.submit(
        session_id="stubborn",
        prompt="Count slowly.",
        cwd=str(stack.workdir()),
        include_partial_messages=True,
    )
    tree: list[Proc] = []
    real: list[Proc] = []

    def record_tree(wrapper_pid: int) -> None:
        """The wrapper (the `started` pid) and its descendants, the real CLI among them."""
        wrapper = Proc.of(wrapper_pid)
        assert wrapper is not None and wrapper.alive()
        assert cmdline(wrapper_pid)[1:2] == [str(IGNORE_INTERRUPT)], cmdline(wrapper_pid)
        tree.append(wrapper)
        for proc in descendants(wrapper_pid):
            tree.append(proc)
            if cmdline(proc.pid)[:1] == [str(CLAUDE_BIN)]:
                real.append(proc)

    events, cancelled = _cancel_at_first_delta(handle, grace_s=1, on_cli=record_tree)

    kinds = types(events)
    assert cancelled.outcome is CancelOutcome.CANCELLED_RUNNING
    done = finished(events)
    assert done["status"] == "interrupted", done
    assert kinds[-2:] == [EventType.INTERRUPTED, EventType.FINISHED], kinds
    # The interrupt was sent, and never reached the CLI: it was killed mid-turn.
    lines = dropped.read_text().splitlines() if dropped.exists() else []
    interrupts = [json.loads(line) for line in lines]
    assert [i["request"]["subtype"] for i in interrupts] == ["interrupt"], interrupts
    assert EventType.RESULT not in kinds
    assert INTERRUPTED_MARKER not in [b["text"] for b in blocks(events, "text", role="user")]
    assert len(_text_deltas(events)) < chunks
    # Both the wrapper (the worker's child) and the real CLI under it are gone.
    wrapper = tree[0]
    assert len(real) == 1, f"the real CLI was not found under the wrapper {wrapper.pid}"
    assert not wrapper.alive(), "the wrapper outlived its run"
    assert not real[0].alive(), "the real CLI outlived its run"
    assert not [p for p in tree if p.alive()], "a process of the run outlived it"
    assert marked_processes(handle.run_id) == []
