"""Envelope.from_json: the fast path for canonical envelopes gives what pydantic gives.

Every case is decoded twice, by `from_json` (fast path first) and by pydantic alone
(`model_validate_json`, the reference), and the two must agree: both raise, or both
give the same envelope, down to field order, the fields set, extras and the JSON kept.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import Envelope, EventType, _canonical, envelopes_from_json

FIELDS = ["seq", "session_id", "run_id", "ts", "type", "data"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

canonical = st.fixed_dictionaries(
    {
        "seq": st.integers(1, 2**80),  # past 64 bits too: both keep a Python int
        "session_id": st.text(max_size=30),
        "run_id": st.text(max_size=40),
        "ts": st.floats(0, 4e9) | st.integers(0, 2**80),
        "type": st.sampled_from([t.value for t in EventType]) | st.text(max_size=12),
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    }
)


def _reference(raw: str | bytes) -> Envelope:
    return Envelope.model_validate_json(raw)


def _same(fast: Envelope, slow: Envelope) -> None:
    assert fast == slow
    assert list(fast.__dict__.items()) == list(slow.__dict__.items())
    assert type(fast.type) is type(slow.type)
    assert type(fast.ts) is type(slow.ts)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.model_dump_json() == slow.model_dump_json()


def _check(raw: str | bytes) -> None:
    try:
        slow = _reference(raw)
    except ValidationError:
        with pytest.raises(ValidationError):
            Envelope.from_json(raw)
        return
    fast = Envelope.from_json(raw)
    _same(fast, slow)
    assert fast.__pydantic_private__ == {"_json": raw}  # kept, to be forwarded as it came


@given(canonical, st.booleans())
def test_a_canonical_envelope_decodes_as_pydantic_decodes_it(obj: dict[str, Any], b: bool) -> None:
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=b)
    _check(raw.encode() if b else raw)


@given(canonical, st.integers(1, 2**63 - 1))
def test_what_our_writers_produce_takes_the_fast_path(obj: dict[str, Any], seq: int) -> None:
    # Within 64 bits, as every seq Redis' INCR gives; a bigger one is pydantic's to read.
    raw = json.dumps({**obj, "seq": seq}, separators=(",", ":"))
    fast = _canonical(raw)
    assert fast is not None
    _same(fast, _reference(raw))


@given(
    canonical,
    st.sampled_from(FIELDS),
    json_values,
    st.sampled_from(["replace", "drop", "extra", "reorder"]),
)
@example(
    {"seq": 1, "session_id": "s", "run_id": "r", "ts": 1.0, "type": "text", "data": {}},
    "seq",
    True,
    "replace",
)
@example(
    {"seq": 1, "session_id": "s", "run_id": "r", "ts": 1.0, "type": "text", "data": {}},
    "ts",
    "1.5",
    "replace",
)
def test_any_other_shape_is_pydantic_s_to_judge(
    obj: dict[str, Any], field: str, value: Any, how: str
) -> None:
    obj = dict(obj)
    if how == "replace":
        obj[field] = value
    elif how == "drop":
        del obj[field]
    elif how == "extra":
        obj["zz_" + field] = value
    else:
        obj = {field: obj.pop(field), **obj}
    _check(json.dumps(obj, separators=(",", ":")))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"null",
        b'{"seq":1}',
        b'{"seq":0,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":[]}',
        b'{"seq":1.0,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{}}',
        b'{"seq":"1","session_id":"s","run_id":"r","ts":1,"type":"text","data":{}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":true,"type":"text","data":{}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{}} x',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"t":"\\ud800"}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"n":1e400}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{"n":99999999999999999999999}}',
        b'{"seq":1,"seq":2,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{}}',
        b'{"seq":1,"session_id":"s","run_id":"r","ts":1,"type":"text","data":{},"data":{"a":1}}',
        b'\xff{"seq":1}',
    ],
)
def test_edge_cases_agree_with_pydantic(raw: bytes) -> None:
    _check(raw)


def test_known_types_are_members_and_unknown_ones_stay_strings() -> None:
    known = Envelope.from_json(
        b'{"seq":3,"session_id":"s","run_id":"r","ts":2,"type":"finished","data":{}}'
    )
    assert known.type is EventType.FINISHED and known.is_terminal
    assert known.ts == 2.0 and type(known.ts) is float
    newer = Envelope.from_json(
        b'{"seq":3,"session_id":"s","run_id":"r","ts":2,"type":"finished_v2","data":{}}'
    )
    assert newer.type == "finished_v2" and not newer.is_known_type


def test_deep_nesting_that_pydantic_s_parser_refuses_is_read() -> None:
    # A tool input nested 300 deep is valid JSON the worker publishes as it came;
    # pydantic's JSON parser stops at a depth limit, msgspec's does not.
    data = json.dumps({"a": json.loads("[" * 300 + "]" * 300)})
    raw = f'{{"seq":1,"session_id":"s","run_id":"r","ts":1.5,"type":"text","data":{data}}}'
    with pytest.raises(ValidationError):
        _reference(raw)
    assert Envelope.from_json(raw).data["a"] == json.loads("[" * 300 + "]" * 300)


def test_a_page_decodes_in_order_and_raises_on_a_bad_entry() -> None:
    raws = [
        json.dumps(
            {"seq": n, "session_id": "s", "run_id": "r", "ts": 1.5, "type": "text", "data": {}},
            separators=(",", ":"),
        ).encode()
        for n in (4, 5, 9)
    ]
    assert [e.seq for e in envelopes_from_json(raws)] == [4, 5, 9]
    assert envelopes_from_json([]) == []
    with pytest.raises(ValidationError):
        envelopes_from_json([raws[0], b'{"seq": 0}'])


def test_envelopes_sharing_their_fields_set_copy_apart() -> None:
    raw = b'{"seq":1,"session_id":"s","run_id":"r","ts":1.5,"type":"text","data":{}}'
    first, second = Envelope.from_json(raw), Envelope.from_json(raw)
    copied = first.model_copy(update={"note": "x"})
    assert "note" in copied.model_fields_set
    assert "note" not in first.model_fields_set and "note" not in second.model_fields_set
    assert first.model_fields_set == set(FIELDS)
