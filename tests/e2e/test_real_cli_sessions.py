"""Sessions with the real CLI: resume, missing transcripts, transcripts that travel.

Run with `make test-e2e` (see tests/e2e/__init__.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.fake_anthropic import TextTurn
from producer.client import Client
from shared.events import Envelope, EventType
from tests.e2e.conftest import ApiFactory, Stack
from tests.e2e.support import (
    assistant_texts,
    claude_session_id,
    data_of,
    error_codes,
    errors,
    finished,
    run_events,
    transcript_file,
    user_texts,
)

pytestmark = pytest.mark.e2e


def test_second_run_resumes_the_conversation(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([TextTurn("First answer."), TextTurn("Second answer.")])
    stack.worker(api)
    workdir = stack.workdir()
    first = run_events(
        client.submit(session_id="resume", prompt="First question.", cwd=str(workdir))
    )
    assert finished(first)["status"] == "succeeded"
    second = run_events(client.submit(session_id="resume", prompt="Second question."))

    assert finished(second)["status"] == "succeeded"
    assert claude_session_id(second) == claude_session_id(first)
    (init,) = data_of(second, EventType.INIT)
    assert init["claude_session_id"] == claude_session_id(first)
    assert init["cwd"] == str(workdir)  # inherited from the session
    asked = user_texts(api.conversation_requests[-1])
    assert "First question." in asked
    assert asked[-1] == "Second question."
    assert assistant_texts(second) == ["Second answer."]


def _forget_transcript(client: Client, home: Path, cwd: Path, events: list[Envelope]) -> Path:
    """Delete a finished run's transcript, on disk and in Redis."""
    path = transcript_file(home, cwd, claude_session_id(events))
    assert path.is_file(), f"the CLI should have written {path}"
    path.unlink()
    session_id = events[0].session_id
    assert client.redis.delete(client.keys.transcript(session_id)) == 1
    return path


def test_missing_transcript_fails_before_the_cli_starts(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([TextTurn("First answer."), TextTurn("Fresh answer.")])
    home, workdir = stack.home(), stack.workdir()
    stack.worker(api, home=home)
    first = run_events(client.submit(session_id="gone", prompt="First question.", cwd=str(workdir)))
    assert finished(first)["status"] == "succeeded"
    path = _forget_transcript(client, home, workdir, first)

    failed = run_events(client.submit(session_id="gone", prompt="Second question."))
    assert finished(failed)["status"] == "failed"
    assert error_codes(failed) == ["transcript_missing"]
    assert claude_session_id(first) in str(errors(failed)[0]["message"])
    assert EventType.STARTED not in [e.type for e in failed]  # the CLI never ran
    assert len(api.conversation_requests) == 1

    fresh = run_events(
        client.submit(session_id="gone", prompt="Third question.", resume_policy="start_fresh")
    )
    assert finished(fresh)["status"] == "succeeded"
    assert error_codes(fresh) == ["transcript_missing"]  # reported, not fatal
    assert claude_session_id(fresh) != claude_session_id(first)
    asked = user_texts(api.conversation_requests[-1])
    assert "First question." not in asked
    assert asked[-1] == "Third question."
    assert assistant_texts(fresh) == ["Fresh answer."]
    assert not path.exists()
    assert transcript_file(home, workdir, claude_session_id(fresh)).is_file()


def _hollow_transcript(client: Client, home: Path, cwd: Path, events: list[Envelope]) -> None:
    """Leave a transcript file holding no conversation: the worker sees a (non-empty)
    local copy and resumes, the real CLI finds no conversation in it."""
    path = transcript_file(home, cwd, claude_session_id(events))
    assert path.is_file(), f"the CLI should have written {path}"
    path.write_bytes(b"{}\n")
    assert client.redis.delete(client.keys.transcript(events[0].session_id)) == 1


def test_cli_that_finds_no_conversation_fails_the_run_as_resume_failed(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([TextTurn("First answer.")])
    home, workdir = stack.home(), stack.workdir()
    stack.worker(api, home=home)
    first = run_events(client.submit(session_id="cli-gone", prompt="First.", cwd=str(workdir)))
    assert finished(first)["status"] == "succeeded"
    _hollow_transcript(client, home, workdir, first)

    failed = run_events(client.submit(session_id="cli-gone", prompt="Second."))
    assert EventType.STARTED in [e.type for e in failed]  # the worker did try
    assert finished(failed)["status"] == "failed"
    resume_failed = [e for e in errors(failed) if e["code"] == "resume_failed"]
    assert len(resume_failed) == 1, errors(failed)
    assert claude_session_id(first) in str(resume_failed[0]["message"])
    assert len(api.conversation_requests) == 1  # the CLI gave up before calling the model


def test_next_run_after_a_cli_resume_failure_under_start_fresh_is_fresh(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([TextTurn("First answer."), TextTurn("Fresh answer.")])
    home, workdir = stack.home(), stack.workdir()
    stack.worker(api, home=home)
    first = run_events(client.submit(session_id="cli-fresh", prompt="First.", cwd=str(workdir)))
    assert finished(first)["status"] == "succeeded"
    _hollow_transcript(client, home, workdir, first)

    failed = run_events(
        client.submit(session_id="cli-fresh", prompt="Second.", resume_policy="start_fresh")
    )
    resume_failed = [e for e in errors(failed) if e["code"] == "resume_failed"]
    assert len(resume_failed) == 1, errors(failed)
    assert "fresh conversation" in str(resume_failed[0]["message"])

    fresh = run_events(client.submit(session_id="cli-fresh", prompt="Third."))
    assert finished(fresh)["status"] == "succeeded", errors(fresh)
    assert claude_session_id(fresh) != claude_session_id(first)
    assert assistant_texts(fresh) == ["Fresh answer."]


def test_transcript_travels_to_a_worker_with_another_home(
    client: Client, stack: Stack, fake_api: ApiFactory
) -> None:
    api = fake_api([TextTurn("Answer on A."), TextTurn("Answer on B.")])
    workdir = stack.workdir()
    home_a, home_b = stack.home("homeA"), stack.home("homeB")

    handle = client.submit(session_id="roam", prompt="Question for A.", cwd=str(workdir))
    worker_a = stack.worker(api, name="hostA", home=home_a, burst=True)
    on_a = run_events(handle)
    assert worker_a.wait(timeout=60) == 0
    assert finished(on_a)["status"] == "succeeded"
    conversation = claude_session_id(on_a)
    assert transcript_file(home_a, workdir, conversation).is_file()
    assert not transcript_file(home_b, workdir, conversation).exists()

    handle = client.submit(session_id="roam", prompt="Question for B.")
    worker_b = stack.worker(api, name="hostB", home=home_b, burst=True)
    on_b = run_events(handle)
    assert worker_b.wait(timeout=60) == 0

    assert finished(on_b)["status"] == "succeeded", errors(on_b)
    (started,) = data_of(on_b, EventType.STARTED)
    assert started["worker"] == "hostB"
    assert claude_session_id(on_b) == conversation
    asked = user_texts(api.conversation_requests[-1])
    assert "Question for A." in asked
    assert asked[-1] == "Question for B."
    assert assistant_texts(on_b) == ["Answer on B."]
    assert transcript_file(home_b, workdir, conversation).is_file()
