"""Warm sessions with the real CLI: three runs of a session, one CLI process.

A simple-mode worker keeps the session's CLI alive after a run that ended normally;
the next run writes its prompt to that CLI (stream-json input) instead of starting
`claude --resume`. Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

import zlib
from typing import Any, cast

import pytest

from devtools.fake_anthropic import TextTurn
from producer.client import Client
from shared.events import Envelope, EventType
from tests.e2e.conftest import ApiFactory, Stack
from tests.e2e.support import (
    assistant_texts,
    claude_session_id,
    errors,
    finished,
    one,
    run_events,
    sent_texts,
    user_texts,
)

pytestmark = pytest.mark.e2e

PROMPTS = ["First question.", "Second question.", "Third question."]
ANSWERS = ["First answer.", "Second answer.", "Third answer."]


def _assistant_texts_sent(request: dict[str, Any]) -> list[str]:
    """The text of every assistant turn in a Messages API request body."""
    return sent_texts(request, "assistant")


def _conversation_order(request: dict[str, Any]) -> list[str]:
    """Our prompts and the model's answers, in the order the request lists them."""
    known = set(PROMPTS) | set(ANSWERS)
    order: list[str] = []
    for message in request.get("messages", []):
        single = {"messages": [message]}
        for text in user_texts(single) + _assistant_texts_sent(single):
            if text in known:
                order.append(text)
    return order


def _stored_transcript(client: Client, session_id: str) -> bytes:
    """The session's transcript as the worker saved it to Redis, inflated."""
    stored = cast(dict[bytes, bytes], client.redis.hgetall(client.keys.transcript(session_id)))
    assert stored.get(b"data"), f"no transcript stored for {session_id}: {sorted(stored)}"
    raw = zlib.decompress(stored[b"data"])
    assert int(stored[b"size"]) == len(raw)
    return raw


def test_three_turns_in_one_warm_cli(client: Client, stack: Stack, fake_api: ApiFactory) -> None:
    api = fake_api([TextTurn(answer) for answer in ANSWERS])
    stack.start_worker("warm-e2e", mode="simple", settings_override=stack.settings_for(api))
    workdir = stack.workdir()
    runs: list[list[Envelope]] = []
    transcripts: list[bytes] = []
    for index, prompt in enumerate(PROMPTS):
        cwd = str(workdir) if index == 0 else None  # later runs inherit the session's
        events = run_events(client.submit(session_id="warm", prompt=prompt, cwd=cwd))
        runs.append(events)
        # Saved after every turn, although the CLI keeps running: portable at any time.
        transcripts.append(_stored_transcript(client, "warm"))

    started = [one(events, EventType.STARTED) for events in runs]
    assert [s["warm"] for s in started] == [False, True, True], started
    assert [s["cold_reason"] for s in started] == [None, None, None], started
    assert len({s["pid"] for s in started}) == 1, started
    for events, answer in zip(runs, ANSWERS, strict=True):
        assert finished(events)["status"] == "succeeded", errors(events)
        assert assistant_texts(events) == [answer]
    assert len({claude_session_id(events) for events in runs}) == 1

    # Each turn the model saw the whole conversation so far, in order.
    requests = api.conversation_requests
    assert len(requests) == 3, [user_texts(r) for r in requests]
    for turn, request in enumerate(requests):
        expected = [text for pair in zip(PROMPTS, ANSWERS, strict=True) for text in pair]
        assert _conversation_order(request) == expected[: 2 * turn + 1]

    # The stored transcript grows with each turn and holds that turn's answer.
    sizes = [len(raw) for raw in transcripts]
    assert sizes[0] < sizes[1] < sizes[2], sizes
    for turn, raw in enumerate(transcripts):
        for answer in ANSWERS[: turn + 1]:
            assert answer.encode() in raw, (turn, answer)
        for later in ANSWERS[turn + 1 :]:
            assert later.encode() not in raw, (turn, later)
    info = client.session("warm")
    assert info is not None and info.transcript_bytes > 0
