"""tests/fakes.FakeRunStore and the real RunStore agree: the same scenarios, both stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from producer.submission import prepare
from shared.encode import encode_body
from shared.events import ErrorCode, ErrorData, Event, EventType, FinishedData, RunStatus, TextData
from shared.jobs import PromptJob
from shared.runstore import (
    Appended,
    CancelOutcome,
    Claimed,
    Condition,
    FinishCondition,
    OwnedBy,
    RunState,
    RunStore,
    Skip,
    Waiting,
)
from shared.settings import Settings
from tests.fakes import FakeRunStore

SESSION = "contract"


@pytest.fixture(params=["fake", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[RunStore]:
    if request.param == "fake":
        yield FakeRunStore()
        return
    settings: Settings = request.getfixturevalue("settings")
    client: redis.Redis = request.getfixturevalue("redis_client")
    yield RunStore(client, settings)


def submit(store: RunStore, session_id: str = SESSION) -> str:
    run = prepare(store.settings, PromptJob(session_id=session_id, prompt="p"))
    store.submit(run)
    return run.run_id


def claim(store: RunStore, run_id: str, worker: str = "w1") -> Claimed | Waiting | Skip:
    return store.claim(SESSION, run_id, worker=worker, host="h")


def token_of(store: RunStore, run_id: str) -> str:
    claimed = claim(store, run_id)
    assert isinstance(claimed, Claimed)
    return claimed.token


def text(run_id: str, value: str) -> str:
    """A text event's body as the publisher encodes it (the store adds the seq)."""
    return encode_body(SESSION, run_id, 1.0, Event(type=EventType.TEXT, data=TextData(text=value)))


def finished(run_id: str) -> str:
    data = FinishedData(status=RunStatus.SUCCEEDED, duration_s=1.0)
    return encode_body(SESSION, run_id, 1.0, Event(type=EventType.FINISHED, data=data))


LOST = Event(type=EventType.ERROR, data=ErrorData(code=ErrorCode.LOST, message="gone"))


def logged(store: RunStore) -> list[tuple[int, str, str]]:
    """(seq, type, text or status) of every logged event."""
    rows = []
    for envelope in store.replay(SESSION):
        detail = envelope.data.get("text") or envelope.data.get("status") or ""
        rows.append((envelope.seq, str(envelope.type), str(detail)))
    return rows


def expire_lease(store: RunStore) -> None:
    if isinstance(store, FakeRunStore):
        store.expire_lease(SESSION)
    else:
        store.redis.delete(store.keys.lease(SESSION))


def expire_wait_marker(store: RunStore, run_id: str) -> None:
    if isinstance(store, FakeRunStore):
        store.expire_wait_marker(SESSION, run_id)
    else:
        store.redis.delete(store.keys.wait_marker(SESSION, run_id))


def test_runs_are_claimed_one_at_a_time_in_submit_order(store: RunStore) -> None:
    first, second = submit(store), submit(store)
    assert claim(store, second) == Waiting(head=first)
    token = token_of(store, first)
    assert claim(store, first) == Skip(state=RunState.RUNNING)  # a duplicate delivery
    assert claim(store, second) == Waiting(head=first)  # the lease is held
    assert store.pending_runs(SESSION) == [first, second]
    assert store.current_run(SESSION) == first
    assert store.renew(SESSION, first, token)
    assert not store.renew(SESSION, first, token + "0")


def test_appends_are_fenced_and_idempotent_per_index(store: RunStore) -> None:
    run_id = submit(store)
    token = token_of(store, run_id)
    bodies = [text(run_id, f"e{i}") for i in range(1, 5)]
    first = store.append(SESSION, run_id, token=token, first_index=1, bodies=bodies[:3])
    assert first.accepted and first.last_seq == 4  # after the queued event
    # A retry after a lost reply repeats indexes 2 and 3: only index 4 is new.
    retry = store.append(SESSION, run_id, token=token, first_index=2, bodies=bodies[1:])
    assert retry.accepted and retry.last_seq == 5
    assert not store.append(SESSION, run_id, token="999", first_index=5, bodies=bodies).accepted
    assert [row[2] for row in logged(store)] == ["", "e1", "e2", "e3", "e4"]
    assert [row[0] for row in logged(store)] == [1, 2, 3, 4, 5]


def test_the_final_write_finishes_the_run_and_frees_the_session(store: RunStore) -> None:
    run_id, next_run = submit(store), submit(store)
    token = token_of(store, run_id)

    def final_write() -> Appended:
        bodies = [finished(run_id)]
        status = RunStatus.SUCCEEDED
        return store.append(
            SESSION, run_id, token=token, first_index=1, bodies=bodies, final_status=status
        )

    done = final_write()
    assert done.accepted and done.last_seq == 3
    record = store.run_record(SESSION, run_id)
    assert (record.state, record.final_status) == (RunState.FINISHED, "succeeded")
    # The same final write retried (its reply lost) is accepted and writes nothing.
    again = final_write()
    assert again.accepted and again.last_seq == 0
    late = [text(run_id, "late")]
    refused = store.append(SESSION, run_id, token=token, first_index=2, bodies=late)
    assert not refused.accepted
    assert store.pending_runs(SESSION) == [next_run]
    assert isinstance(claim(store, next_run), Claimed)


def test_a_run_whose_lease_expired_is_fenced_off_and_can_be_reaped(store: RunStore) -> None:
    run_id = submit(store)
    token = token_of(store, run_id)

    def reap(condition: FinishCondition) -> bool:
        status, reason = RunStatus.LOST, "gone"
        return store.force_finish(
            SESSION, run_id, status=status, condition=condition, closing=LOST, reason=reason
        )

    assert not reap(Condition.LEASE_GONE)  # the lease is alive
    expire_lease(store)
    assert not store.renew(SESSION, run_id, token)
    assert not store.append(
        SESSION, run_id, token=token, first_index=1, bodies=[text(run_id, "late")]
    ).accepted
    assert not reap(OwnedBy("someone-else"))
    assert reap(Condition.LEASE_GONE)
    assert [row[1:] for row in logged(store)] == [
        ("queued", ""),
        ("error", ""),
        ("finished", "lost"),
    ]
    assert store.run_record(SESSION, run_id).final_status == "lost"
    assert store.pending_runs(SESSION) == []


def test_cancel_outcomes(store: RunStore) -> None:
    running, queued = submit(store), submit(store)
    token_of(store, running)
    assert store.cancel_requested(SESSION, running) is None
    assert store.cancel(SESSION, queued, reason="r") is CancelOutcome.CANCELLED_QUEUED
    assert store.cancel(SESSION, running, reason="r") is CancelOutcome.CANCELLED_RUNNING
    assert store.cancel_requested(SESSION, running) == 0.0
    assert store.cancel(SESSION, queued, reason="r") is CancelOutcome.ALREADY_FINISHED
    assert store.cancel(SESSION, "0" * 32, reason="r") is CancelOutcome.NOTHING_TO_CANCEL
    assert [row[1:] for row in logged(store)] == [
        ("queued", ""),
        ("queued", ""),
        ("interrupted", ""),
        ("finished", "interrupted"),
    ]
    assert store.pending_runs(SESSION) == [running]
    assert claim(store, queued) == Skip(state=RunState.FINISHED)


def test_a_held_run_whose_waiting_worker_died_can_be_reaped(store: RunStore) -> None:
    running, held = submit(store), submit(store)
    token_of(store, running)
    assert claim(store, held, worker="w2") == Waiting(head=running)  # w2 holds it, waiting

    def reap() -> bool:
        status, condition = RunStatus.LOST, Condition.WAIT_GONE
        return store.force_finish(
            SESSION, held, status=status, condition=condition, closing=LOST, reason="gone"
        )

    assert not reap()  # w2 is still waiting
    expire_wait_marker(store, held)
    assert reap()
    assert not reap()  # only once
    assert store.pending_runs(SESSION) == [running]
    assert store.run_record(SESSION, held).final_status == "lost"
