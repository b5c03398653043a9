"""Submit → real RQ worker → fake CLI → Redis → client, end to end."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from pathlib import Path

import pytest

from producer.aio import AsyncClient
from producer.client import Client
from producer.errors import InvalidJobError
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import texts


def _contiguous(events: list[Envelope]) -> bool:
    seqs = [e.seq for e in events]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_submit_streams_every_event_in_order(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    handle = client.submit(session_id="s1", prompt="hello there")
    events = list(handle.stream(timeout_s=60))
    types = [e.type for e in events]
    assert types[:3] == [EventType.QUEUED, EventType.STARTED, EventType.INIT]
    assert types.count(EventType.FINISHED) == 1
    assert types[-1] is EventType.FINISHED
    assert _contiguous(events)
    assert {e.run_id for e in events} == {handle.run_id}
    assert events[-1].data["status"] == "succeeded"
    assert events[-1].data["exit_code"] == 0
    assert "ECHO:hello there" in texts(events)
    result = next(e for e in events if e.type is EventType.RESULT)
    assert result.data["is_error"] is False
    assert result.data["claude_session_id"] == events[-1].data["claude_session_id"]


def test_late_subscriber_replays_everything(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    handle = client.submit(session_id="late", prompt="FAKE: tool")
    live = list(handle.stream(timeout_s=60))
    replayed = client.history("late")
    assert [e.model_dump() for e in replayed] == [e.model_dump() for e in live]
    assert any(e.type is EventType.MESSAGE for e in replayed)
    tail = client.history("late", after=live[2].seq)
    assert [e.seq for e in tail] == [e.seq for e in live[3:]]


def test_joining_mid_run_sees_no_gap_and_no_duplicate(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="join", prompt="FAKE: slow n=30 delay_ms=30")
    first: list[Envelope] = []
    joined: list[Envelope] = []
    joiner: threading.Thread | None = None

    def join_late() -> None:
        joined.extend(client.stream("join", stop_at_finish=True, timeout_s=60))

    for envelope in handle.stream(timeout_s=60):
        first.append(envelope)
        if joiner is None and len(texts(first)) == 5:  # mid-run: 5 of 30 lines out
            joiner = threading.Thread(target=join_late)
            joiner.start()
    assert joiner is not None
    joiner.join(timeout=60)
    assert [e.seq for e in joined] == [e.seq for e in first]
    assert _contiguous(joined)
    assert joined[-1].type is EventType.FINISHED


def test_a_stream_joining_mid_burst_delivers_each_event_once_in_order(
    client: Client, start_worker: WorkerFactory
) -> None:
    # Joined 1,000 events into a 20,000-event burst: the joiner subscribes, reads the
    # log while the burst goes on, and hears live again what it read there, which it
    # passes over (producer/cursor.py seen_before; its exactness is held by the unit
    # tests, this holds the whole stream to no gap, no duplicate, seq order).
    start_worker()
    handle = client.submit(session_id="burst", prompt="FAKE: many n=20000 rate=0")
    first = iter(handle.stream(timeout_s=120))
    head = list(itertools.islice(first, 1000))  # 1,000 events into the burst
    start = head[0].seq
    del first  # closed here (CPython): its subscription ends with it
    joined = list(client.stream("burst", after=start - 1, stop_at_finish=True, timeout_s=120))
    assert [e.seq for e in joined] == list(range(start, start + len(joined)))
    assert joined[-1].type is EventType.FINISHED
    assert joined[-1].data["status"] == "succeeded"
    assert len(joined) > 20000


def test_prompt_starting_with_dashes_reaches_stdin_verbatim(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    start_worker(
        env={"FAKE_CLAUDE_ARGV_LOG": str(argv_log)},
        settings_override=settings.model_copy(
            update={"cli_env_passthrough": ("FAKE_CLAUDE_ARGV_LOG",)}
        ),
    )
    prompt = "--help; rm -rf / $(whoami) `id` 'quoted'\n-p --resume=x"
    handle = client.submit(session_id="dash", prompt=prompt)
    finished = handle.wait(timeout_s=60)
    assert finished.status == "succeeded"
    record = json.loads(argv_log.read_text().splitlines()[0])
    assert record["stdin"] == prompt
    assert prompt not in record["argv"]
    assert all("rm -rf" not in arg for arg in record["argv"])
    assert "ECHO:" + prompt in texts(client.history("dash"))


def test_context_is_prepended_and_settings_env_stays_private(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    start_worker(
        env={"FAKE_CLAUDE_ARGV_LOG": str(argv_log)},
        settings_override=settings.model_copy(
            update={"cli_env_passthrough": ("FAKE_CLAUDE_ARGV_LOG",)}
        ),
    )
    handle = client.submit(
        session_id="ctx", prompt="what is x?", context={"x": 42}, model="claude-test-1"
    )
    assert handle.wait(timeout_s=60).status == "succeeded"
    record = json.loads(argv_log.read_text().splitlines()[0])
    assert record["stdin"].startswith("<context>\n")
    assert '"x": 42' in record["stdin"]
    assert record["stdin"].endswith("what is x?")
    assert "--model=claude-test-1" in record["argv"]
    assert not any(k.startswith("CLAUDE_QUEUE_TEST") for k in record["env_extra"])


def test_invalid_job_is_refused_before_anything_is_queued(client: Client) -> None:
    with pytest.raises(InvalidJobError, match="session_id"):
        client.submit(session_id="bad id with spaces", prompt="x")
    with pytest.raises(InvalidJobError, match="prompt"):
        client.submit(session_id="ok", prompt="   ")
    with pytest.raises(InvalidJobError, match="profile"):
        client.submit(session_id="ok", prompt="x", profile="no-such-profile")
    assert client.queue.count == 0
    assert client.history("ok") == []


def test_session_seq_continues_across_runs(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    first = client.submit(session_id="multi", prompt="one")
    second = client.submit(session_id="multi", prompt="two")
    assert second.wait(timeout_s=60).status == "succeeded"
    assert first.wait(timeout_s=60).status == "succeeded"
    events = client.history("multi")
    assert _contiguous(events)
    assert [e.type for e in events].count(EventType.FINISHED) == 2


def test_async_client_submits_and_streams(settings: Settings, start_worker: WorkerFactory) -> None:
    start_worker()

    async def scenario() -> list[Envelope]:
        async with AsyncClient(settings) as aclient:
            handle = await aclient.submit(session_id="aio", prompt="async hello")
            return [e async for e in handle.stream(timeout_s=60)]

    events = asyncio.run(scenario())
    assert events[0].type is EventType.QUEUED
    assert events[-1].type is EventType.FINISHED
    assert events[-1].data["status"] == "succeeded"
    assert "ECHO:async hello" in texts(events)
    assert _contiguous(events)
