"""shared/forwarded.py: a Forwarded envelope holds what the decoded Envelope would.

Whatever the bytes: `forwarded(raw)` raises exactly when `Envelope.from_json(raw)`
does, and otherwise carries the same seq, session, run, type and JSON to write out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.encode import encode_body
from shared.events import Envelope, EventType
from shared.forwarded import Forwarded, forwarded, forwarded_page
from tests.unit.test_parser import json_values, lines
from worker.parser import parse_line


def assert_same(raw: str | bytes) -> None:
    try:
        envelope = Envelope.from_json(raw)
    except ValueError:
        with pytest.raises(ValueError):
            forwarded(raw)
        return
    passed_on = forwarded(raw)
    assert (passed_on.seq, passed_on.session_id, passed_on.run_id) == (
        envelope.seq,
        envelope.session_id,
        envelope.run_id,
    )
    assert passed_on.type == envelope.type
    assert type(passed_on.type) is type(envelope.type)  # EventType when known
    assert passed_on.to_json() == envelope.to_json()
    data = json.loads(passed_on.to_json())["data"]
    assert json.dumps(data) == json.dumps(envelope.data)  # NaN, if any, is NaN on both


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(lines, st.integers(1, 2**63 - 1))
def test_what_our_writers_log_is_passed_on_as_decoded(obj: dict[str, Any], seq: int) -> None:
    for event in parse_line(json.dumps(obj).encode()).events:
        body = encode_body("s1", "r" * 32, 1.5, event)
        assert_same(f'{{"seq":{seq},{body}'.encode())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "seq": st.integers(-2, 2**64) | json_values,
            "session_id": st.text(max_size=5) | json_values,
            "run_id": st.text(max_size=5) | json_values,
            "ts": st.floats(allow_nan=False) | json_values,
            "type": st.sampled_from(["finished", "message", "new_type"]) | json_values,
            "data": json_values,
            "extra": json_values,
        },
    ),
    st.booleans(),
)
def test_any_envelope_shaped_json_is_judged_as_the_decoder_judges_it(
    obj: dict[str, Any], pretty: bool
) -> None:
    assert_same(json.dumps(obj, indent=1 if pretty else None).encode())


@given(st.binary(max_size=80) | st.builds(lambda b: b'{"seq":1,' + b, st.binary(max_size=60)))
def test_any_bytes_are_judged_as_the_decoder_judges_them(raw: bytes) -> None:
    assert_same(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"t":"caf\xc3\xa9"}}',
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"t":"\xff"}}',
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text","data":[1]}',
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"a":1},"x":2}',
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text",\n"data":{}}',
        b'{"seq":0,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{}}',
        b'{"seq":3,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"a":NaN}}',
    ],
)
def test_the_edges_are_judged_as_the_decoder_judges_them(raw: bytes) -> None:
    assert_same(raw)


def test_a_page_keeps_its_order_and_a_known_type_is_its_member() -> None:
    raws = [
        f'{{"seq":{i},"session_id":"s","run_id":"r","ts":1.0,"type":"finished","data":{{}}}}'
        for i in (4, 5, 6)
    ]
    page = forwarded_page(raws)
    assert [f.seq for f in page] == [4, 5, 6]
    assert all(f.type is EventType.FINISHED for f in page)
    assert page[0] == Forwarded(4, "s", "r", EventType.FINISHED, raws[0])
