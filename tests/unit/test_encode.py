"""shared/encode.py's data_json against pydantic's own JSON of the same data.

The fast path (msgspec) must write exactly what pydantic writes: the same keys in the
same order, the same values. Compared after a round trip through json (which makes
`1e16` and `1e+16` alike, and keeps key order), on every event the parser makes from
arbitrary lines, and on values msgspec refuses (pydantic then decides).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.blocks import MalformedBlock, TextBlock, ToolUseBlock
from shared.encode import data_json
from shared.events import ErrorCode, ErrorData, EventData, MessageData, StreamEventData
from tests.unit.test_parser import finite_json_values, json_values, lines
from worker.parser import parse_line


def _normal(text: str | bytes) -> str:
    return json.dumps(json.loads(text))


def assert_same_json(data: EventData) -> None:
    assert _normal(data_json(data)) == _normal(data.model_dump_json())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_every_parsed_event_encodes_as_pydantic_would(obj: dict[str, Any]) -> None:
    for event in parse_line(json.dumps(obj).encode()).events:
        assert_same_json(event.data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, finite_json_values, st.text(max_size=30))
def test_free_form_parts_encode_as_pydantic_would(event: Any, extra: Any, text: str) -> None:
    assert_same_json(StreamEventData(event={"e": event}, parent_tool_use_id=text or None))
    blocks = [
        TextBlock.model_validate({"text": text, "citations": extra}),
        ToolUseBlock(id="t1", name=text, input={"x": event}),
        MalformedBlock(block=event),
    ]
    assert_same_json(MessageData(role="assistant", content=blocks, usage={"n": extra}))


@pytest.mark.parametrize(
    "value",
    [
        2**70,  # past 64 bits: msgspec refuses, pydantic writes it
        [float("nan"), float("inf"), -0.0, 1e16, 5e-324],
        'caf\u00e9 \u65e5\u672c\u8a9e "q" \\ \n \u2028',
    ],
)
def test_values_at_the_edges_encode_as_pydantic_would(value: Any) -> None:
    assert_same_json(StreamEventData(event={"v": value}))


def test_what_pydantic_refuses_it_still_refuses() -> None:
    lone_surrogate = StreamEventData(event={"v": "\ud800"})
    with pytest.raises(ValueError, match="surrogates not allowed"):
        data_json(lone_surrogate)


def test_other_data_is_left_to_pydantic() -> None:
    # bytes: msgspec would write base64, pydantic writes the text. Only the parser's
    # data types go the fast way, and a JSON decoder never makes bytes.
    error = ErrorData(code=ErrorCode.CLI_ERROR, message="m", detail={"raw": b"abc"})
    assert json.loads(data_json(error))["detail"] == {"raw": "abc"}
    assert data_json(error) == error.model_dump_json().encode()


@pytest.mark.parametrize("depth", [150, 253, 254, 255, 400])
def test_nesting_pydantic_refuses_stays_refused(depth: int) -> None:
    nested: Any = "leaf"
    for _ in range(depth):
        nested = [nested]
    data = StreamEventData(event={"deep": nested})
    try:
        expected = data.model_dump_json()
    except ValueError:
        with pytest.raises(ValueError, match="depth"):
            data_json(data)
    else:
        assert _normal(data_json(data)) == _normal(expected)


def test_a_text_full_of_braces_encodes_as_pydantic_would() -> None:
    code = "fn f() { if x { [1, [2]] } }\n" * 100
    assert_same_json(MessageData(role="user", content=[TextBlock(text=code)]))
