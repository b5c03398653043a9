"""The publisher against the fake store: order, batches, outage buffering, retried writes."""

from __future__ import annotations

import pytest

from shared.events import Event, EventType, FinishedData, RunStatus, TextData
from shared.runstore import RunState
from tests.fakes import FakeRunStore, Fault, run_publisher
from worker.publisher import BufferOverflow, OwnershipLost


def text(value: str) -> Event:
    return Event(type=EventType.TEXT, data=TextData(text=value))


def finished(status: RunStatus = RunStatus.SUCCEEDED) -> Event:
    return Event(type=EventType.FINISHED, data=FinishedData(status=status, duration_s=1.0))


def logged_texts(store: FakeRunStore) -> list[str]:
    return [str(e.data.get("text")) for e in store.envelopes("s") if e.type is EventType.TEXT]


def test_events_are_written_in_order_with_contiguous_seqs() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    for index in range(5):
        publisher.add(text(f"t{index}"))
    publisher.flush()
    assert logged_texts(store) == [f"t{index}" for index in range(5)]
    assert [e.seq for e in store.envelopes("s")] == [1, 2, 3, 4, 5]
    assert publisher.last_seq == 5
    assert len(store.appends) == 1  # a burst goes out as one batch


def test_a_big_burst_is_split_into_batches_that_keep_the_order() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    for index in range(4500):
        publisher.add(text(str(index)))
    publisher.flush()
    assert logged_texts(store) == [str(index) for index in range(4500)]
    firsts = [call.first_index for call in store.appends]
    assert len(firsts) > 1
    assert firsts == sorted(firsts)
    assert all(len(call.bodies) <= 2000 for call in store.appends)


def test_events_wait_out_an_outage_in_order() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    store.faults.append(Fault.DOWN)
    publisher.add(text("a"))
    publisher.add(text("b"))
    publisher.flush()  # Redis is away: kept, not raised, so the CLI keeps being read
    assert store.envelopes("s") == []
    publisher.add(text("c"))
    publisher.flush(wait=True)
    assert logged_texts(store) == ["a", "b", "c"]
    assert [e.seq for e in store.envelopes("s")] == [1, 2, 3]


def test_an_outage_longer_than_the_buffer_overflows() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store, max_buffer_bytes=4096)
    store.faults.extend([Fault.DOWN] * 1000)
    with pytest.raises(BufferOverflow, match="CLAUDE_QUEUE_PUBLISH_BUFFER_BYTES"):
        for index in range(1000):
            publisher.add(text(f"{index:0100d}"))
            publisher.flush()
    assert store.envelopes("s") == []


def test_a_write_retried_after_a_lost_reply_is_not_duplicated() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    store.faults.append(Fault.REPLY_LOST)  # written, but the worker never hears so
    publisher.publish(text("a"), text("b"))
    assert logged_texts(store) == ["a", "b"]
    retried, first = store.appends[-1], store.appends[0]
    # The retry carries the same run-local indexes, which is what lets the store dedupe.
    assert (retried.first_index, retried.bodies) == (first.first_index, first.bodies)
    publisher.publish(text("c"))
    assert store.appends[-1].first_index == 3
    assert logged_texts(store) == ["a", "b", "c"]


def test_a_retried_final_write_still_finishes_the_run_once() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    store.faults.append(Fault.REPLY_LOST)
    publisher.publish(text("a"), finished(), final_status=RunStatus.SUCCEEDED)
    assert [e.type for e in store.envelopes("s")] == [EventType.TEXT, EventType.FINISHED]
    record = store.run_record("s", "r")
    assert (record.state, record.final_status) == (RunState.FINISHED, "succeeded")


def test_a_run_that_lost_its_lease_is_refused() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store)
    publisher.publish(text("mine"))
    store.expire_lease("s")
    publisher.add(text("too late"))
    with pytest.raises(OwnershipLost):
        publisher.flush()
    assert logged_texts(store) == ["mine"]
