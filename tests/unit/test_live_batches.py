"""producer/aiostream.py's live batches: what an asyncio stream takes from its queue at
once, and where it stops."""

from __future__ import annotations

from producer.aiostream import _LIVE_BATCH, _held_live
from producer.fanout import LOST, LiveMessage, Subscription
from shared.events import Envelope


def _message(seq: int) -> LiveMessage:
    envelope = Envelope(seq=seq, session_id="s", run_id="r" * 32, ts=1.0, type="text", data={})
    return LiveMessage(envelope.to_json().encode())


def _queued(*messages: LiveMessage) -> Subscription:
    subscription = Subscription("channel")
    for message in messages:
        subscription.queue.put_nowait(message)
    return subscription


def test_what_is_queued_is_taken_up_to_the_batch_size() -> None:
    subscription = _queued(*(_message(seq) for seq in range(1, 2 * _LIVE_BATCH)))
    held = _held_live(subscription)
    assert [e.seq for e in held] == list(range(1, _LIVE_BATCH))  # the first comes apart
    assert subscription.queue.qsize() == _LIVE_BATCH


def test_a_lost_connection_stays_queued_for_the_next_read() -> None:
    subscription = _queued(_message(1), LOST, _message(2))
    assert [e.seq for e in _held_live(subscription)] == [1]
    assert subscription.queue.get_nowait() is LOST


def test_a_message_that_does_not_decode_stays_queued_for_the_next_read() -> None:
    bad = LiveMessage(b"{not json")
    subscription = _queued(_message(1), bad, _message(2))
    assert [e.seq for e in _held_live(subscription)] == [1]
    assert subscription.queue.get_nowait() is bad


def test_nothing_queued_is_nothing_held() -> None:
    assert _held_live(_queued()) == []
