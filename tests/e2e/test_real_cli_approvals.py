"""Permission requests with the real CLI: allowed, denied, timed out, answered twice.

The job's profile is `ask`, so the CLI asks before using Bash (`--permission-prompt-tool
stdio`); the worker publishes a `permission_request` and the test answers it through
the client, as a person would. Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.fake_anthropic import TextTurn, Turn, bash_turn
from producer.approvals import AnswerOutcome, AnswerResult
from producer.client import Client, RunHandle
from shared.events import Envelope, EventType
from tests.e2e.conftest import ApiFactory, Stack
from tests.e2e.support import (
    STREAM_TIMEOUT_S,
    assistant_texts,
    data_of,
    finished,
    one,
    tool_results,
    types,
)

pytestmark = pytest.mark.e2e

DENIAL = "not on my watch"

Answer = Callable[[dict[str, Any]], None]


def _script(made: Path) -> list[Turn]:
    return [bash_turn(f"touch {made}", "Make a file"), TextTurn("done")]


def _submit(client: Client, session_id: str, workdir: Path) -> RunHandle:
    return client.submit(
        session_id=session_id, prompt="Make the file.", cwd=str(workdir), profile="ask"
    )


def _run_answering(handle: RunHandle, answer: Answer | None) -> list[Envelope]:
    """Every event of the run; `answer` is called with each permission request's data."""
    events: list[Envelope] = []
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        events.append(envelope)
        if envelope.type is EventType.PERMISSION_REQUEST and answer is not None:
            answer(envelope.data)
    kinds = types(events)
    assert kinds and kinds[-1] is EventType.FINISHED, kinds
    assert kinds.count(EventType.FINISHED) == 1, kinds
    return events


def _bash_request(events: list[Envelope], made: Path) -> dict[str, Any]:
    request = one(events, EventType.PERMISSION_REQUEST)
    assert request["tool_name"] == "Bash", request
    assert request["input"]["command"] == f"touch {made}", request
    assert request["tool_use_id"], request
    return request


def _index(events: list[Envelope], found: Callable[[Envelope], bool]) -> int:
    matches = [i for i, e in enumerate(events) if found(e)]
    assert len(matches) == 1, (matches, types(events))
    return matches[0]


def _is_tool_result(envelope: Envelope) -> bool:
    return envelope.type is EventType.MESSAGE and any(
        block.get("type") == "tool_result" for block in envelope.data["content"]
    )


def test_allowed_tool_runs(client: Client, stack: Stack, fake_api: ApiFactory) -> None:
    workdir = stack.workdir()
    made = workdir / "made"
    api = fake_api(_script(made))
    stack.worker(api)
    handle = _submit(client, "approve", workdir)
    outcomes: list[AnswerResult] = []

    def allow(request: dict[str, Any]) -> None:
        assert not made.exists()  # the CLI waits for the answer
        outcomes.append(
            client.respond(handle.session_id, request["request_id"], allow=True, decided_by="e2e")
        )

    events = _run_answering(handle, allow)

    request = _bash_request(events, made)
    assert [o.outcome for o in outcomes] == [AnswerOutcome.DELIVERED]
    assert made.is_file()
    decision = one(events, EventType.PERMISSION_DECISION)
    assert decision["request_id"] == request["request_id"]
    assert decision["behavior"] == "allow"
    assert decision["reason"] == "answered"
    assert decision["decided_by"] == "e2e"
    decided_at = _index(events, lambda e: e.type is EventType.PERMISSION_DECISION)
    assert decided_at < _index(events, _is_tool_result)
    (result,) = tool_results(api.conversation_requests[-1])
    assert result["tool_use_id"] == request["tool_use_id"]
    assert not result.get("is_error"), result
    assert assistant_texts(events)[-1] == "done"
    assert finished(events)["status"] == "succeeded"


def test_denied_tool_does_not_run_and_the_model_is_told_why(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    workdir = stack.workdir()
    made = workdir / "made"
    api = fake_api(_script(made))
    stack.worker(api)
    handle = _submit(client, "deny", workdir)
    outcomes: list[AnswerResult] = []

    def deny(request: dict[str, Any]) -> None:
        outcomes.append(
            client.respond(
                handle.session_id,
                request["request_id"],
                allow=False,
                message=DENIAL,
                decided_by="e2e",
            )
        )

    events = _run_answering(handle, deny)

    request = _bash_request(events, made)
    assert [o.outcome for o in outcomes] == [AnswerOutcome.DELIVERED]
    assert not made.exists()
    decision = one(events, EventType.PERMISSION_DECISION)
    assert decision["request_id"] == request["request_id"]
    assert (decision["behavior"], decision["reason"]) == ("deny", "answered")
    assert decision["message"] == DENIAL
    # The model's next request carries the refusal, with the person's words.
    (result,) = tool_results(api.conversation_requests[-1])
    assert result["tool_use_id"] == request["tool_use_id"]
    assert result.get("is_error") is True, result
    assert DENIAL in _text_of(result), result
    assert assistant_texts(events)[-1] == "done"  # the final text turn still ran
    assert finished(events)["status"] == "succeeded"


def test_unanswered_request_times_out_as_a_deny(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    workdir = stack.workdir()
    made = workdir / "made"
    api = fake_api(_script(made))
    settings = stack.settings_for(api).model_copy(update={"approval_timeout_s": 1.0})
    stack.start_worker(settings_override=settings)
    handle = _submit(client, "timeout", workdir)

    events = _run_answering(handle, None)

    request = _bash_request(events, made)
    decision = one(events, EventType.PERMISSION_DECISION)
    assert decision["request_id"] == request["request_id"]
    assert (decision["behavior"], decision["reason"]) == ("deny", "timed_out")
    assert decision["decided_by"] is None
    assert not made.exists()
    late = handle.respond(request["request_id"], allow=True, decided_by="too late")
    assert late.outcome in {AnswerOutcome.ALREADY_DECIDED, AnswerOutcome.RUN_NOT_RUNNING}, late
    # The model is told the request went unanswered.
    (result,) = tool_results(api.conversation_requests[-1])
    assert result["tool_use_id"] == request["tool_use_id"]
    assert result.get("is_error") is True, result
    assert decision["message"] and decision["message"] in _text_of(result), result
    assert finished(events)["status"] == "succeeded"


def test_two_answers_at_once_one_wins(client: Client, stack: Stack, fake_api: ApiFactory) -> None:
    workdir = stack.workdir()
    made = workdir / "made"
    api = fake_api(_script(made))
    stack.worker(api)
    handle = _submit(client, "race", workdir)
    outcomes: dict[bool, AnswerResult] = {}

    def race(request: dict[str, Any]) -> None:
        start = threading.Barrier(2)

        def answer(allow: bool, answering: Client) -> None:
            start.wait(timeout=30)
            outcomes[allow] = answering.respond(
                handle.session_id,
                request["request_id"],
                allow=allow,
                message=None if allow else DENIAL,
                decided_by=f"e2e-{'allow' if allow else 'deny'}",
            )

        with Client(client.settings) as other:
            threads = [
                threading.Thread(target=answer, args=(True, client)),
                threading.Thread(target=answer, args=(False, other)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        assert set(outcomes) == {True, False}, outcomes

    events = _run_answering(handle, race)

    _bash_request(events, made)
    delivered = [allow for allow, result in outcomes.items() if result.delivered]
    assert len(delivered) == 1, outcomes
    won = delivered[0]
    assert outcomes[not won].outcome is AnswerOutcome.ALREADY_DECIDED, outcomes
    decision = one(events, EventType.PERMISSION_DECISION)
    assert decision["behavior"] == ("allow" if won else "deny"), decision
    assert decision["decided_by"] == f"e2e-{'allow' if won else 'deny'}"
    assert made.exists() is won
    assert len(data_of(events, EventType.PERMISSION_REQUEST)) == 1
    assert finished(events)["status"] == "succeeded"


def _text_of(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""
