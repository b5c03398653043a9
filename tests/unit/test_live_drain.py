"""producer.aiostream.next_live: one wake-up of a stream hands on every live message
already queued for it, in order; a lost connection or an invalid message among them
is raised after the events before it, on the next call. Pure: the queue is filled here."""

from __future__ import annotations

import asyncio

import pytest
import redis
from pydantic import ValidationError

from producer import aiostream
from producer.aiostream import next_live
from producer.fanout import LOST, LiveMessage, Subscription
from shared.events import Envelope


def raw(seq: int) -> bytes:
    envelope = Envelope(seq=seq, session_id="s", run_id="r" * 32, ts=1.0, type="text", data={})
    return envelope.model_dump_json().encode()


def queued(*messages: LiveMessage) -> Subscription:
    subscription = Subscription("c")
    for message in messages:
        subscription.queue.put_nowait(message)
    return subscription


def seqs(subscription: Subscription) -> list[int]:
    return [e.seq for e in asyncio.run(next_live(subscription, 0.01))]


def test_every_queued_message_is_handed_on_at_once_in_order() -> None:
    subscription = queued(*(LiveMessage(raw(n)) for n in (1, 2, 3)))
    assert seqs(subscription) == [1, 2, 3]
    assert seqs(subscription) == []  # none left: the wait timed out


def test_one_wake_up_hands_on_at_most_the_drain_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiostream, "_DRAIN_MAX", 2)
    subscription = queued(*(LiveMessage(raw(n)) for n in (1, 2, 3)))
    assert seqs(subscription) == [1, 2]
    assert seqs(subscription) == [3]


def test_a_lost_connection_is_raised_after_the_events_before_it() -> None:
    subscription = queued(LiveMessage(raw(1)), LiveMessage(raw(2)), LOST, LiveMessage(raw(3)))
    assert seqs(subscription) == [1, 2]
    with pytest.raises(redis.ConnectionError, match="lost"):
        seqs(subscription)


def test_an_invalid_message_is_raised_after_the_events_before_it() -> None:
    subscription = queued(LiveMessage(raw(1)), LiveMessage(b"{not json"), LiveMessage(raw(3)))
    assert seqs(subscription) == [1]
    with pytest.raises(ValidationError):
        seqs(subscription)
    assert seqs(subscription) == [3]  # the stream's caller decides whether to read on


def test_a_lost_connection_first_is_raised_at_once() -> None:
    subscription = queued(LOST, LiveMessage(raw(1)))
    with pytest.raises(redis.ConnectionError):
        seqs(subscription)
    assert seqs(subscription) == [1]
