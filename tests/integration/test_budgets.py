"""Byte budgets: one run cannot fill Redis, and one event cannot be larger than the limit."""

from __future__ import annotations

import redis

from producer.client import Client
from shared.events import (
    Envelope,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    RunStatus,
    TextData,
)
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import TEST_PREFIX, WorkerFactory
from tests.fakes import FakeRunStore, run_publisher
from tests.helpers import texts
from worker.proctree import is_alive
from worker.publisher import LogBudgetExceeded
from worker.truncate import MARKER_RE

MiB = 1024 * 1024


def _run(client: Client, session_id: str, prompt: str) -> list[Envelope]:
    events = list(client.submit(session_id=session_id, prompt=prompt).stream(timeout_s=120))
    assert [e.type for e in events].count(EventType.FINISHED) == 1
    assert events[-1].type is EventType.FINISHED
    return events


def _log_entry_sizes(redis_client: redis.Redis, session_id: str) -> list[int]:
    entries = redis_client.xrange(Keys(TEST_PREFIX).log(session_id)) or []
    return [len(fields[b"e"]) for _, fields in entries if fields is not None]


def test_a_flood_of_large_lines_is_stopped_at_the_run_log_budget(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    budget = 8 * MiB
    start_worker(settings_override=settings.model_copy(update={"max_run_log_bytes": budget}))
    # 64 lines of 4 MiB: 256 MiB if nothing stopped it, 64 MiB even if only truncated.
    events = _run(client, "flood", "FAKE: flood n=64 mb=4")

    finished = events[-1].data
    assert finished["status"] == "failed"
    (error,) = [e.data for e in events if e.type is EventType.ERROR]
    assert error["code"] == "log_budget_exceeded"
    assert f"{budget}-byte limit (CLAUDE_QUEUE_MAX_RUN_LOG_BYTES)" in str(error["message"])
    assert finished["reason"] == error["message"]
    assert not any(e.type is EventType.RESULT for e in events)  # stopped mid-flood

    cli_pid = int(next(e.data["pid"] for e in events if e.type is EventType.STARTED))
    assert not is_alive(cli_pid)

    flood_texts = [t for t in texts(events) if t.startswith("x")]
    assert flood_texts  # some lines got through, each one truncated and marked
    assert all(MARKER_RE.search(t) for t in flood_texts)

    sizes = _log_entry_sizes(redis_client, "flood")
    assert len(sizes) == len(events)
    assert max(sizes) <= settings.max_event_bytes
    assert sum(sizes) <= budget
    memory = redis_client.memory_usage(Keys(TEST_PREFIX).log("flood"), samples=0)
    assert memory is not None
    assert memory <= budget + MiB


def test_an_oversized_answer_is_truncated_and_the_run_succeeds(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    start_worker()
    events = _run(client, "big", "FAKE: big_answer kb=3072")  # a 3 MiB answer and result
    assert events[-1].data["status"] == "succeeded"
    assert not [e for e in events if e.type is EventType.ERROR]
    (answer,) = [t for t in texts(events) if t.startswith("0123456789abcdef")]
    marker = MARKER_RE.search(answer)
    assert marker is not None
    kept = answer[: marker.start()]
    assert len(kept) + int(marker.group(1)) == 3 * MiB  # nothing lost without saying so
    (result,) = [e for e in events if e.type is EventType.RESULT]
    assert MARKER_RE.search(str(result.data["result"]))
    assert max(_log_entry_sizes(redis_client, "big")) <= settings.max_event_bytes


# ------------------------------------------------------- the publisher's accounting (pure)


def test_ordinary_events_stop_at_the_budget_and_closing_events_still_fit() -> None:
    budget = 256 * 1024
    store = FakeRunStore()
    publisher = run_publisher(store, max_event_bytes=64 * 1024)
    publisher.limit_run_log(budget)
    line = Event(type=EventType.TEXT, data=TextData(text="y" * 10_000))
    added = 0
    try:
        while True:
            publisher.add(line)
            added += 1
    except LogBudgetExceeded as exc:
        assert f"{budget}-byte limit (CLAUDE_QUEUE_MAX_RUN_LOG_BYTES)" in str(exc)
    assert added > 0
    before = publisher.logged_bytes
    assert before + 10_000 > budget - 64 * 1024  # it stopped only when the next would pass
    publisher.flush()
    longest_seq = '{"seq":' + "9" * 19 + ","
    bodies = [entry.split(",", 1)[1] for entry in store.log_entries("s")]
    xadded = sum(len(longest_seq + body) for body in bodies)
    assert len(bodies) == added
    assert xadded <= before <= budget - 64 * 1024  # the count never undercounts the log

    error = ErrorData(code=ErrorCode.LOG_BUDGET_EXCEEDED, message="stopped")
    finished = FinishedData(status=RunStatus.FAILED, duration_s=1.0, stderr_tail="e" * 16384)
    publisher.publish(
        Event(type=EventType.ERROR, data=error),
        Event(type=EventType.FINISHED, data=finished),
        final_status=RunStatus.FAILED,
    )
    assert publisher.logged_bytes <= budget
    assert len(store.log_entries("s")) == added + 2
    assert store.run_record("s", "r").final_status == "failed"
