"""One run each: submit → real worker → real CLI → fake model → Redis → client stream.

Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

import os
import re

import pytest

from devtools.fake_anthropic import (
    FAKE_SIGNATURE,
    MIB,
    TextTurn,
    ThinkingTurn,
    bash_turn,
    big_text_turn,
    error_turn,
)
from producer.client import Client
from shared.events import EventType
from tests.e2e.conftest import ApiFactory, Stack
from tests.e2e.support import (
    CLI_VERSION,
    assistant_texts,
    blocks,
    data_of,
    error_codes,
    errors,
    finished,
    one,
    run_events,
    types,
    user_texts,
)

pytestmark = pytest.mark.e2e

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_text_answer(client: Client, stack: Stack, fake_api: ApiFactory) -> None:
    api = fake_api([TextTurn("Hello from the fake model.", chunks=3)])
    stack.worker(api)
    workdir = stack.workdir()
    handle = client.submit(session_id="text", prompt="Say hello.", cwd=str(workdir))
    events = run_events(handle)

    kinds = types(events)
    assert kinds[:3] == [EventType.QUEUED, EventType.STARTED, EventType.INIT], kinds
    init = one(events, EventType.INIT)
    assert init["cli_version"] == CLI_VERSION
    assert _UUID.fullmatch(str(init["claude_session_id"])), init
    assert init["cwd"] == str(workdir)
    assert assistant_texts(events) == ["Hello from the fake model."]
    result = one(events, EventType.RESULT)
    assert result["is_error"] is False
    assert result["result"] == "Hello from the fake model."
    assert result["claude_session_id"] == init["claude_session_id"]
    assert errors(events) == []
    done = finished(events)
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["claude_session_id"] == init["claude_session_id"]
    # The prompt reached the model as the user's turn, through the worker and the CLI.
    assert "Say hello." in user_texts(api.conversation_requests[-1])


def test_partial_messages_stream_the_answer_in_deltas(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    answer = "one two three four five six seven"
    api = fake_api([TextTurn(answer, chunks=5)])
    stack.worker(api)
    handle = client.submit(
        session_id="partial",
        prompt="Count.",
        cwd=str(stack.workdir()),
        include_partial_messages=True,
    )
    events = run_events(handle)

    raw = [d["event"] for d in data_of(events, EventType.STREAM_EVENT)]
    deltas = [
        e["delta"]["text"]
        for e in raw
        if e.get("type") == "content_block_delta" and e["delta"].get("type") == "text_delta"
    ]
    assert len(deltas) == 5, deltas
    assert "".join(deltas) == answer
    assert {"message_start", "content_block_start", "message_stop"} <= {e["type"] for e in raw}
    assert assistant_texts(events) == [answer]
    assert finished(events)["status"] == "succeeded"


def test_thinking_block_with_signature_then_text(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    thought = "The user wants a greeting. Keep it short."
    api = fake_api([ThinkingTurn(thought, "Hi there!")])
    stack.worker(api)
    handle = client.submit(session_id="thinking", prompt="Greet me.", cwd=str(stack.workdir()))
    events = run_events(handle)

    thinking = blocks(events, "thinking", role="assistant")
    assert [(b["thinking"], b["signature"]) for b in thinking] == [(thought, FAKE_SIGNATURE)]
    assert assistant_texts(events) == ["Hi there!"]
    # The thinking block comes first (CLI 2.1.330: one message event per block).
    order = [
        block["type"]
        for data in data_of(events, EventType.MESSAGE)
        for block in data["content"]
        if block["type"] in ("thinking", "text")
    ]
    assert order == ["thinking", "text"]
    # CLI 2.1.330 prints one line per block: two message events of the same API message.
    messages = data_of(events, EventType.MESSAGE)
    assert [len(m["content"]) for m in messages] == [1, 1]
    assert len({m["message_id"] for m in messages}) == 1, messages
    assert finished(events)["status"] == "succeeded"


def test_bash_tool_runs_when_the_profile_allows_it(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([bash_turn("touch created.txt", "Create a file"), TextTurn("Created it.")])
    stack.worker(api)
    workdir = stack.workdir()
    handle = client.submit(
        session_id="bash-ok", prompt="Create a file.", cwd=str(workdir), profile="bash"
    )
    events = run_events(handle)

    (tool_use,) = blocks(events, "tool_use", role="assistant")
    assert tool_use["name"] == "Bash"
    assert tool_use["input"]["command"] == "touch created.txt"
    (tool_result,) = blocks(events, "tool_result", role="user")
    assert tool_result["tool_use_id"] == tool_use["id"]
    assert tool_result["is_error"] is False
    assert (workdir / "created.txt").is_file()
    result = one(events, EventType.RESULT)
    assert result["permission_denials"] == []
    assert result["num_turns"] == 2
    assert assistant_texts(events) == ["Created it."]
    assert finished(events)["status"] == "succeeded"
    # The model's second call carried the tool's result.
    assert len(api.conversation_requests) == 2


def test_bash_tool_is_denied_by_a_readonly_profile(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([bash_turn("touch denied.txt", "Create a file"), TextTurn("I was not allowed.")])
    stack.worker(api)
    workdir = stack.workdir()
    handle = client.submit(
        session_id="bash-denied", prompt="Create a file.", cwd=str(workdir), profile="readonly"
    )
    events = run_events(handle)

    (tool_use,) = blocks(events, "tool_use", role="assistant")
    (tool_result,) = blocks(events, "tool_result", role="user")
    assert tool_result["tool_use_id"] == tool_use["id"]
    assert tool_result["is_error"] is True
    assert not (workdir / "denied.txt").exists()
    result = one(events, EventType.RESULT)
    assert result["is_error"] is False
    denials = result["permission_denials"]
    assert [(d["tool_name"], d["tool_use_id"]) for d in denials] == [("Bash", tool_use["id"])]
    # A denial is the model's business, not a failed run.
    assert errors(events) == []
    assert assistant_texts(events) == ["I was not allowed."]
    assert finished(events)["status"] == "succeeded"


@pytest.mark.parametrize("status", [400, 401, 429, 500, 529])
def test_http_error_of_the_model_api_fails_the_run_clearly(
    client: Client, stack: Stack, fake_api: ApiFactory, status: int
) -> None:
    api = fake_api([error_turn(status, times=100)])  # sticky: every retry fails too
    stack.worker(api)
    handle = client.submit(session_id=f"http-{status}", prompt="Hello?", cwd=str(stack.workdir()))
    events = run_events(handle)

    assert api.conversation_requests, "the CLI never called the fake model"
    found = errors(events)
    assert any(str(status) in str(e["message"]) for e in found), found
    # CLI 2.1.330 reports an API error twice: a synthetic assistant line carrying a
    # top-level `error` (-> cli_error, or authentication_failed for 401), then an
    # is_error result (-> result_error).
    first_code = "authentication_failed" if status == 401 else "cli_error"
    assert error_codes(events) == [first_code, "result_error"], found
    assert found[0]["detail"]["api_error_status"] == status
    # The CLI's synthetic "API Error" answer is an error, never a normal assistant message.
    assert not [t for t in assistant_texts(events) if "API Error" in t]
    result = one(events, EventType.RESULT)
    assert result["is_error"] is True
    assert finished(events)["status"] == "failed"


def test_no_api_key_is_an_authentication_error_not_an_answer(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    assert "ANTHROPIC_API_KEY" not in os.environ  # the autouse fixture removed any
    api = fake_api([TextTurn("must never be served")])
    stack.worker(api, api_key=False)
    handle = client.submit(session_id="no-key", prompt="Hello?", cwd=str(stack.workdir()))
    events = run_events(handle)

    auth = [e for e in errors(events) if e["code"] == "authentication_failed"]
    assert len(auth) == 1, errors(events)
    assert "Not logged in" in str(auth[0]["message"])
    assert not [t for t in assistant_texts(events) if "Not logged in" in t]
    assert data_of(events, EventType.MESSAGE) == []
    assert finished(events)["status"] == "failed"
    assert api.requests == []  # the CLI gave up before any request
    assert api.turns_left == 1


def test_prompt_starting_with_dashes_reaches_the_model_verbatim(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    prompt = "--help me please"
    api = fake_api([TextTurn("Sure.")])
    stack.worker(api)
    handle = client.submit(session_id="dashes", prompt=prompt, cwd=str(stack.workdir()))
    events = run_events(handle)

    assert finished(events)["status"] == "succeeded"
    (request,) = api.conversation_requests
    assert user_texts(request)[-1] == prompt
    assert assistant_texts(events) == ["Sure."]


def test_one_mebibyte_answer_arrives_whole_under_a_raised_event_limit(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    turn = big_text_turn(MIB)
    api = fake_api([turn])
    raised = stack.settings_for(api).model_copy(update={"max_event_bytes": 4 * MIB})
    stack.start_worker(None, settings_override=raised)
    handle = client.submit(session_id="big", prompt="Write a lot.", cwd=str(stack.workdir()))
    events = run_events(handle)

    assert finished(events)["status"] == "succeeded"
    assert errors(events) == []
    (text,) = assistant_texts(events)
    assert len(text) == MIB
    assert text == turn.text
    assert one(events, EventType.RESULT)["result"] == turn.text
    assert api.turns_left == 0


def test_one_mebibyte_answer_is_truncated_and_marked_at_the_default_event_limit(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    turn = big_text_turn(MIB)
    api = fake_api([turn])
    stack.worker(api)
    handle = client.submit(session_id="big-cut", prompt="Write a lot.", cwd=str(stack.workdir()))
    events = run_events(handle)

    assert finished(events)["status"] == "succeeded"
    assert errors(events) == []
    (text,) = assistant_texts(events)
    kept, marker, cut = text.rpartition("…[truncated ")
    assert marker, "the cut text carries the truncation marker"
    assert turn.text.startswith(kept)
    assert len(kept.encode()) + int(cut.removesuffix(" bytes]")) == len(turn.text.encode())
    assert all(len(e.model_dump_json()) <= MIB for e in events)
