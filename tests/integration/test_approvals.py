"""Permission requests end to end: real workers, the fake CLI asking on stdin, real Redis.

A run of the `ask` profile starts the CLI with --permission-prompt-tool=stdio. The fake
CLI's `FAKE: ask` scenario prints a Bash tool_use, asks for it on stdout and waits for
the answer on stdin; only when allowed does it append a line to its `touch` file, so
that file is the tool's observable effect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producer import AnswerOutcome
from producer.cancelling import CancelOutcome
from producer.client import Client, RunHandle
from producer.errors import StreamTimeout
from shared.control import CONTROL_MESSAGE, PermissionAnswer
from shared.events import DecisionReason, Envelope, EventType
from shared.runstore import Decision
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import texts
from worker.proctree import run_processes

STREAM_TIMEOUT_S = 60.0
COMMAND = "make deploy"
NOT_GRANTED = "Claude requested permissions to use Bash, but you haven't granted it yet."


def _ask(touch: Path, *, n: int = 1) -> str:
    return f'FAKE: ask tool=Bash command="{COMMAND}" touch={touch} n={n}'


@dataclass(slots=True)
class Followed:
    """A run's stream, consumed step by step; everything seen so far is in `events`."""

    handle: RunHandle
    stream: Iterator[Envelope]
    events: list[Envelope] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.handle.session_id

    def until(self, event_type: EventType) -> Envelope:
        """Consume up to the next event of this type and return it."""
        for envelope in self.stream:
            self.events.append(envelope)
            if envelope.type is event_type:
                return envelope
        raise AssertionError(f"the stream ended before {event_type}: {self.types()}")

    def to_end(self) -> list[Envelope]:
        self.events.extend(self.stream)
        return self.events

    def types(self) -> list[EventType | str]:
        return [e.type for e in self.events]

    def of(self, event_type: EventType) -> list[Envelope]:
        return [e for e in self.events if e.type is event_type]

    def position(self, envelope: Envelope) -> int:
        return [e.seq for e in self.events].index(envelope.seq)

    def finished(self, status: str) -> dict[str, Any]:
        """The one `finished` event, last, with this status."""
        assert self.types().count(EventType.FINISHED) == 1, self.types()
        last = self.events[-1]
        assert last.type is EventType.FINISHED, self.types()
        assert last.data["status"] == status, last.data
        return last.data


def _submit(client: Client, session_id: str, prompt: str, profile: str = "ask") -> Followed:
    handle = client.submit(session_id=session_id, prompt=prompt, profile=profile)
    return Followed(handle, handle.stream(timeout_s=STREAM_TIMEOUT_S))


def _tool_results(events: list[Envelope]) -> list[tuple[Envelope, dict[str, Any]]]:
    """(message event, tool_result block) of every tool result the CLI reported."""
    return [
        (e, block)
        for e in events
        if e.type is EventType.MESSAGE and e.data["role"] == "user"
        for block in e.data["content"]
        if block.get("type") == "tool_result"
    ]


def _tool_use_ids(events: list[Envelope]) -> list[str]:
    return [
        str(block["id"])
        for e in events
        if e.type is EventType.MESSAGE and e.data["role"] == "assistant"
        for block in e.data["content"]
        if block.get("type") == "tool_use"
    ]


def _decision(envelope: Envelope) -> tuple[object, ...]:
    d = envelope.data
    return (d["request_id"], d["behavior"], d.get("message"), d.get("decided_by"), d["reason"])


def _is_answer(payload: bytes) -> bool:
    try:
        return isinstance(CONTROL_MESSAGE.validate_json(payload), PermissionAnswer)
    except ValidationError:
        return False  # e.g. the worker's listener stopping itself


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_allow_runs_the_tool_after_the_decision_event(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-allow", _ask(touch))
    request = run.until(EventType.PERMISSION_REQUEST)
    request_id = str(request.data["request_id"])
    assert request.data["tool_name"] == "Bash"
    assert request.data["input"]["command"] == COMMAND
    assert request.data["tool_use_id"] == _tool_use_ids(run.events)[-1]
    assert request.data["suggestions"], "the CLI's permission suggestions are passed on"
    assert not touch.exists(), "the CLI waits for the answer before it runs the tool"

    listed = client.open_requests("appr-allow")
    assert [(o.run_id, o.request.request_id) for o in listed] == [(run.handle.run_id, request_id)]
    assert listed[0].request.tool_name == "Bash"

    answer = client.respond("appr-allow", request_id, allow=True, decided_by="alice")
    assert answer.outcome is AnswerOutcome.DELIVERED
    assert answer.run_id == run.handle.run_id
    assert client.open_requests("appr-allow") == []
    run.to_end()

    decisions = run.of(EventType.PERMISSION_DECISION)
    assert [_decision(d) for d in decisions] == [(request_id, "allow", None, "alice", "answered")]
    ((result_event, result_block),) = _tool_results(run.events)
    assert result_block["is_error"] is False
    assert run.position(request) < run.position(decisions[0]) < run.position(result_event)
    assert _lines(touch) == [f"1 {COMMAND}"]
    assert "allowed: Bash" in texts(run.events)
    run.finished("succeeded")
    # The run is over: a late answer changes nothing.
    late = client.respond("appr-allow", request_id, allow=False, run_id=run.handle.run_id)
    assert late.outcome is AnswerOutcome.RUN_NOT_RUNNING


def test_deny_refuses_the_tool_and_the_model_sees_why(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-deny", _ask(touch))
    request_id = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])
    answer = client.respond(
        "appr-deny", request_id, allow=False, message="not on a Friday", decided_by="bob"
    )
    assert answer.outcome is AnswerOutcome.DELIVERED
    run.to_end()

    decisions = run.of(EventType.PERMISSION_DECISION)
    assert [_decision(d) for d in decisions] == [
        (request_id, "deny", "not on a Friday", "bob", "answered")
    ]
    ((result_event, result_block),) = _tool_results(run.events)
    assert result_block["is_error"] is True
    assert result_block["content"] == "not on a Friday"
    assert run.position(decisions[0]) < run.position(result_event)
    assert not touch.exists()
    assert "denied: not on a Friday" in texts(run.events)
    run.finished("succeeded")


def test_unanswered_request_times_out_as_a_deny(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker(settings_override=settings.model_copy(update={"approval_timeout_s": 1.0}))
    touch = tmp_path / "touched"
    run = _submit(client, "appr-timeout", _ask(touch))
    request_id = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])
    run.to_end()  # nobody answers

    (decision,) = run.of(EventType.PERMISSION_DECISION)
    assert _decision(decision)[:2] == (request_id, "deny")
    assert decision.data["reason"] == DecisionReason.TIMED_OUT
    assert decision.data.get("decided_by") is None
    assert "APPROVAL_TIMEOUT_S" in str(decision.data["message"])
    ((_, result_block),) = _tool_results(run.events)
    assert result_block["is_error"] is True
    assert not touch.exists()
    run.finished("succeeded")
    recorded = client.store.decisions("appr-timeout", run.handle.run_id, [request_id])
    assert recorded[request_id].reason is DecisionReason.TIMED_OUT


def test_two_requests_are_answered_in_turn(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-two", _ask(touch, n=2))
    first = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])
    # The CLI asks one at a time: the second request comes only after the first answer.
    assert [o.request.request_id for o in client.open_requests("appr-two")] == [first]
    assert client.respond("appr-two", first, allow=True).outcome is AnswerOutcome.DELIVERED

    second = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])
    assert second != first
    assert _lines(touch) == [f"1 {COMMAND}"]  # the first call ran before the second ask
    assert [o.request.request_id for o in client.open_requests("appr-two")] == [second]
    answer = client.respond("appr-two", second, allow=False, message="once is enough")
    assert answer.outcome is AnswerOutcome.DELIVERED
    run.to_end()

    decisions = [_decision(d) for d in run.of(EventType.PERMISSION_DECISION)]
    assert decisions == [
        (first, "allow", None, None, "answered"),
        (second, "deny", "once is enough", None, "answered"),
    ]
    assert [block["is_error"] for _, block in _tool_results(run.events)] == [False, True]
    assert _lines(touch) == [f"1 {COMMAND}"]
    run.finished("succeeded")


def test_cancel_with_an_open_request_decides_it_run_ended_before_finished(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-cancel", _ask(touch))
    request_id = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])

    cancelled = run.handle.cancel(wait=True, timeout_s=30)
    assert cancelled.outcome is CancelOutcome.CANCELLED_RUNNING
    run.to_end()

    finished = run.finished("interrupted")
    (decision,) = run.of(EventType.PERMISSION_DECISION)
    assert _decision(decision)[:2] == (request_id, "deny")
    assert decision.data["reason"] == DecisionReason.RUN_ENDED
    assert run.position(decision) < len(run.events) - 1
    assert run.types().count(EventType.INTERRUPTED) == 1
    assert finished["exit_code"] == -9
    assert not touch.exists()
    assert run_processes(run.handle.run_id) == set()
    # Answers that come too late learn that the run is over.
    late = client.respond("appr-cancel", request_id, allow=True)
    assert late.outcome is AnswerOutcome.RUN_NOT_RUNNING
    late = client.respond("appr-cancel", request_id, allow=True, run_id=run.handle.run_id)
    assert late.outcome is AnswerOutcome.RUN_NOT_RUNNING
    recorded = client.store.decisions("appr-cancel", run.handle.run_id, [request_id])
    assert recorded[request_id].reason is DecisionReason.RUN_ENDED


def test_answer_to_an_unknown_request_changes_nothing(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-unknown", _ask(touch))
    request_id = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])

    stray = client.respond("appr-unknown", "no-such-request", allow=True)
    assert stray.outcome is AnswerOutcome.UNKNOWN_REQUEST
    assert [o.request.request_id for o in client.open_requests("appr-unknown")] == [request_id]
    assert not touch.exists()

    assert client.respond("appr-unknown", request_id, allow=True).outcome is (
        AnswerOutcome.DELIVERED
    )
    again = client.respond("appr-unknown", request_id, allow=False)
    assert again.outcome in (AnswerOutcome.ALREADY_DECIDED, AnswerOutcome.RUN_NOT_RUNNING)
    run.to_end()
    assert [_decision(d)[:2] for d in run.of(EventType.PERMISSION_DECISION)] == [
        (request_id, "allow")
    ]
    assert _lines(touch) == [f"1 {COMMAND}"]
    run.finished("succeeded")


def test_waiting_for_an_answer_is_not_idling(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    idle_s = 1.0
    start_worker(settings_override=settings.model_copy(update={"idle_timeout_s": idle_s}))
    touch = tmp_path / "touched"
    run = _submit(client, "appr-idle", _ask(touch))
    request = run.until(EventType.PERMISSION_REQUEST)

    # Silence three times longer than idle_timeout_s: the stream shows nothing at all
    # (an idle kill would show an error and `finished`) until its own time limit.
    quiet = client.stream(
        "appr-idle",
        after=request.seq,
        stop_at_finish=True,
        run_id=run.handle.run_id,
        timeout_s=3 * idle_s,
    )
    seen: list[tuple[EventType | str, dict[str, Any]]] = []
    with contextlib.suppress(StreamTimeout):
        for envelope in quiet:
            seen.append((envelope.type, envelope.data))
    assert seen == [], "the run did not wait quietly for its answer"

    assert client.respond("appr-idle", str(request.data["request_id"]), allow=True).outcome is (
        AnswerOutcome.DELIVERED
    )
    run.to_end()
    run.finished("succeeded")
    assert EventType.ERROR not in run.types()
    assert _lines(touch) == [f"1 {COMMAND}"]

    # Positive control: the same worker does kill a CLI that is silent without asking.
    control = client.submit(session_id="appr-idle-control", prompt="FAKE: sleep seconds=30")
    assert control.wait(timeout_s=STREAM_TIMEOUT_S).status == "timed_out"


def test_profile_without_approval_refuses_the_tool_without_asking(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-never", _ask(touch), profile="readonly")
    run.to_end()
    assert EventType.PERMISSION_REQUEST not in run.types()
    assert EventType.PERMISSION_DECISION not in run.types()
    ((_, result_block),) = _tool_results(run.events)
    assert result_block["is_error"] is True
    assert result_block["content"] == NOT_GRANTED
    assert "refused: Bash" in texts(run.events)
    assert not touch.exists()
    run.finished("succeeded")


def test_decision_recorded_without_a_message_is_found_by_polling(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    touch = tmp_path / "touched"
    run = _submit(client, "appr-poll", _ask(touch))
    request_id = str(run.until(EventType.PERMISSION_REQUEST).data["request_id"])
    control = client.redis.pubsub()
    control.subscribe(client.keys.control("appr-poll", run.handle.run_id))
    try:
        # As if the pub/sub answer were lost: recorded, but nobody is told.
        outcome = client.store.decide(
            "appr-poll",
            run.handle.run_id,
            request_id,
            Decision(behavior="allow", decided_by="poller"),
            notify=False,
        )
        assert outcome is AnswerOutcome.DELIVERED
        run.to_end()
        published = []
        while (message := control.get_message(timeout=0.0)) is not None:
            if message["type"] == "message":
                published.append(message["data"])
        assert [m for m in published if _is_answer(m)] == [], "an answer was published"
    finally:
        control.close()
    assert [_decision(d) for d in run.of(EventType.PERMISSION_DECISION)] == [
        (request_id, "allow", None, "poller", "answered")
    ]
    assert _lines(touch) == [f"1 {COMMAND}"]
    run.finished("succeeded")
