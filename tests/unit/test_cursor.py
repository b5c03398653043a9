"""Unit tests for producer.cursor.SeqCursor: duplicate / gap / deliver and when to stop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.cursor import SeqCursor, Verdict, seen_before
from shared.encode import encode_body
from shared.events import Envelope, Event, EventType, TextData
from shared.runstore.calls import replay_range

RUN_A = "a" * 32
RUN_B = "b" * 32


def env(seq: int, event_type: EventType = EventType.TEXT, run_id: str = RUN_A) -> Envelope:
    data = {"status": "succeeded", "duration_s": 1.0} if event_type is EventType.FINISHED else {}
    return Envelope(seq=seq, session_id="s1", run_id=run_id, ts=0.0, type=event_type, data=data)


def test_fresh_cursor_delivers_seq_one() -> None:
    cursor = SeqCursor()
    assert cursor.judge(env(1)) is Verdict.DELIVER


def test_fresh_cursor_sees_seq_two_as_gap() -> None:
    assert SeqCursor().judge(env(2)) is Verdict.GAP


@pytest.mark.parametrize(
    ("seq", "verdict"),
    [
        (1, Verdict.DUPLICATE),
        (4, Verdict.DUPLICATE),
        (5, Verdict.DUPLICATE),
        (6, Verdict.DELIVER),
        (7, Verdict.GAP),
        (1000, Verdict.GAP),
    ],
)
def test_verdicts_relative_to_last_seq(seq: int, verdict: Verdict) -> None:
    assert SeqCursor(last_seq=5).judge(env(seq)) is verdict


def test_judge_does_not_advance() -> None:
    cursor = SeqCursor(last_seq=5)
    cursor.judge(env(6))
    assert cursor.last_seq == 5
    assert cursor.judge(env(6)) is Verdict.DELIVER


def test_delivered_advances_and_next_is_deliver() -> None:
    cursor = SeqCursor()
    for seq in range(1, 6):
        assert cursor.judge(env(seq)) is Verdict.DELIVER
        cursor.delivered(env(seq))
        assert cursor.last_seq == seq
        assert cursor.judge(env(seq)) is Verdict.DUPLICATE
    assert cursor.done is False


def test_gap_filled_from_log_then_live_duplicate_dropped() -> None:
    cursor = SeqCursor(last_seq=2)
    live = env(5)
    assert cursor.judge(live) is Verdict.GAP
    for seq in (3, 4, 5):  # what the replay from the log gives
        assert cursor.judge(env(seq)) is Verdict.DELIVER
        cursor.delivered(env(seq))
    assert cursor.judge(live) is Verdict.DUPLICATE


def test_finished_without_stop_at_finish_does_not_stop() -> None:
    cursor = SeqCursor()
    cursor.delivered(env(1, EventType.FINISHED))
    assert cursor.done is False


def test_stop_at_finish_any_run() -> None:
    cursor = SeqCursor(stop_at_finish=True)
    cursor.delivered(env(1, EventType.ERROR))
    assert cursor.done is False
    cursor.delivered(env(2, EventType.FINISHED, run_id=RUN_B))
    assert cursor.done is True
    assert cursor.last_seq == 2


def test_stop_at_finish_of_given_run_only() -> None:
    cursor = SeqCursor(stop_at_finish=True, run_id=RUN_A)
    cursor.delivered(env(1, EventType.FINISHED, run_id=RUN_B))
    assert cursor.done is False
    cursor.delivered(env(2, EventType.STARTED, run_id=RUN_A))
    assert cursor.done is False
    cursor.delivered(env(3, EventType.FINISHED, run_id=RUN_A))
    assert cursor.done is True


def test_log_range_ids() -> None:
    assert replay_range(0, None) == ("1-0", "+")
    assert replay_range(41, 42) == ("42-0", "42-0")


def published(seq: int, text: str = "x") -> dict[str, Any]:
    """A pub/sub message as the append script publishes an envelope."""
    body = encode_body("s1", RUN_A, 1.0, Event(type=EventType.TEXT, data=TextData(text=text)))
    return {"type": "message", "channel": b"c", "data": (f'{{"seq":{seq},' + body).encode()}


@given(st.integers(1, 2**63 - 1), st.integers(0, 2**63 - 1), st.text(max_size=20))
def test_a_live_envelope_is_seen_before_exactly_when_its_seq_is_not_past_the_cursor(
    seq: int, last_seq: int, text: str
) -> None:
    message = published(seq, text)
    assert seen_before(message, last_seq) == (seq <= last_seq)
    # and the seq it was judged by is the one its decode holds
    assert Envelope.from_json(message["data"]).seq == seq


@given(st.binary(max_size=40) | st.builds(lambda t: b'{"seq":' + t, st.binary(max_size=30)))
def test_any_bytes_are_judged_without_raising_and_only_by_a_leading_seq(data: bytes) -> None:
    message = {"type": "message", "channel": b"c", "data": data}
    if seen_before(message, 10**30):
        digits = data[len(b'{"seq":') :].split(b",", 1)[0]
        assert data.startswith(b'{"seq":') and digits.isdigit()


@pytest.mark.parametrize(
    "message",
    [
        None,
        {"type": "subscribe", "channel": b"c", "data": 1},
        {"type": "message", "channel": "c", "data": '{"seq":1,"x":1}'},  # str: decoded as ever
        {"type": "message", "channel": b"c", "data": b'{"seq":-1,"x":1}'},
        {"type": "message", "channel": b"c", "data": b'{"seq":1}'},  # no comma after it
        {"type": "message", "channel": b"c", "data": b'{ "seq":1,"x":1}'},
        {"type": "message", "channel": b"c", "data": json.dumps({"a": 1, "seq": 1}).encode()},
    ],
)
def test_what_does_not_start_like_our_envelopes_is_left_to_the_decoder(
    message: dict[str, object] | None,
) -> None:
    assert not seen_before(message, 10**6)
