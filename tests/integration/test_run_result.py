"""RunHandle.result() and wait() on both clients, against a real worker."""

from __future__ import annotations

import asyncio

import pytest
import redis

from producer.aio import AsyncClient, AsyncRunHandle
from producer.client import Client, RunHandle
from producer.errors import StreamEnded
from producer.result import RunResult
from shared.events import ErrorCode, EventType, RunStatus
from shared.settings import Settings
from tests.conftest import WorkerFactory

ANSWER = "The answer is 42."
STREAM_TIMEOUT_S = 60


def _assert_answered(result: RunResult, handle: RunHandle | AsyncRunHandle) -> None:
    assert result.status is RunStatus.SUCCEEDED
    assert result.succeeded
    assert result.text == ANSWER
    assert (result.session_id, result.run_id) == (handle.session_id, handle.run_id)
    assert result.total_cost_usd == pytest.approx(0.0012)  # what the fake CLI reports
    assert result.usage is not None
    assert result.usage["output_tokens"] > 0
    assert result.num_turns == 1
    assert result.duration_s > 0
    assert result.claude_session_id
    assert result.claude_session_id == result.finished.claude_session_id
    assert result.errors == ()


def _assert_failed(result: RunResult) -> None:
    assert result.status is RunStatus.FAILED
    assert not result.succeeded
    assert result.text.startswith("API Error: 500")
    assert ErrorCode.RESULT_ERROR in [error.code for error in result.errors]


def test_result_returns_the_answer_and_what_it_cost(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="res", prompt=f'FAKE: text text="{ANSWER}"')
    _assert_answered(handle.result(timeout_s=STREAM_TIMEOUT_S), handle)
    # A finished run gives the same result again, from the log alone.
    assert handle.result(timeout_s=STREAM_TIMEOUT_S) == handle.result(timeout_s=STREAM_TIMEOUT_S)


def test_result_of_a_failed_run_carries_its_errors(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    ahead = client.submit(session_id="res-fail", prompt="FAKE: text")  # another run's events
    handle = client.submit(session_id="res-fail", prompt="FAKE: error_result")
    _assert_failed(handle.result(timeout_s=STREAM_TIMEOUT_S))
    assert ahead.result(timeout_s=STREAM_TIMEOUT_S).text == "Hello from fake claude"


def test_async_result_matches_the_sync_one(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()

    async def scenario() -> tuple[AsyncRunHandle, RunResult, RunResult]:
        async with AsyncClient(settings) as aclient:
            answered = await aclient.submit(session_id="ares", prompt=f'FAKE: text text="{ANSWER}"')
            failed = await aclient.submit(session_id="ares", prompt="FAKE: error_result")
            return (
                answered,
                await answered.result(timeout_s=STREAM_TIMEOUT_S),
                await failed.result(timeout_s=STREAM_TIMEOUT_S),
            )

    handle, answered, failed = asyncio.run(scenario())
    _assert_answered(answered, handle)
    _assert_failed(failed)
    sync_handle = RunHandle(client, handle.session_id, handle.run_id, handle.queued_seq)
    assert sync_handle.result(timeout_s=STREAM_TIMEOUT_S) == answered


def test_wait_and_result_raise_stream_ended_for_a_session_deleted_mid_run(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="gone", prompt="FAKE: hang")
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        if envelope.type is EventType.INIT:
            break
    assert client.delete_session("gone", force=True) > 0
    with pytest.raises(StreamEnded, match=handle.run_id):
        handle.wait(timeout_s=STREAM_TIMEOUT_S)  # before: a hang, then StreamTimeout
    with pytest.raises(StreamEnded):
        handle.result(timeout_s=STREAM_TIMEOUT_S)


def _expire(redis_client: redis.Redis, client: Client, session_id: str) -> None:
    """What the session's expiry does: every key of it goes, the run mid-way."""
    keys = list(redis_client.scan_iter(match=client.keys.session_pattern(session_id)))
    assert keys
    redis_client.unlink(*keys)


def test_a_following_stream_ends_when_its_session_expires(
    client: Client, redis_client: redis.Redis, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="expired", prompt="FAKE: hang")
    seen: list[EventType | str] = []
    with pytest.raises(StreamEnded, match="expired"):
        for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
            seen.append(envelope.type)
            if envelope.type is EventType.INIT:
                _expire(redis_client, client, "expired")
    assert EventType.FINISHED not in seen


def test_an_async_stream_and_wait_end_when_their_session_expires(
    settings: Settings, client: Client, redis_client: redis.Redis, start_worker: WorkerFactory
) -> None:
    start_worker()

    async def scenario() -> list[EventType | str]:
        seen: list[EventType | str] = []
        async with AsyncClient(settings) as aclient:
            handle = await aclient.submit(session_id="aexpired", prompt="FAKE: hang")
            with pytest.raises(StreamEnded, match="expired"):
                async for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
                    seen.append(envelope.type)
                    if envelope.type is EventType.INIT:
                        _expire(redis_client, client, "aexpired")
            with pytest.raises(StreamEnded):
                await handle.wait(timeout_s=STREAM_TIMEOUT_S)
            with pytest.raises(StreamEnded):
                await handle.result(timeout_s=STREAM_TIMEOUT_S)
        return seen

    assert EventType.FINISHED not in asyncio.run(scenario())
