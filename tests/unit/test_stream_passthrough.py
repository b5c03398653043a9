"""worker.parser.stream_event_as_printed: a stream_event line's `event` passed on as
the CLI printed it, never decoded.

Whatever it takes must reach a reader as the same event `parse_line` would have made:
compared as envelopes read back through `Envelope.from_json`. Whatever it declines
(None) goes to `parse_line`, so declining is always safe; taking is what is checked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.encode import EncodedEvent, encode_with_header, envelope_header
from shared.events import Envelope, Event, EventType, StreamEventData
from tests.fakes import FakeRunStore, run_publisher
from tests.unit.test_parser import finite_json_values
from worker.parser import parse_line, stream_event_as_printed

HEADER = envelope_header("s", "r")


def compact(obj: Any) -> bytes:
    """A line as the CLI prints it: compact, UTF-8 (not \\u escapes)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def stream_line(event: Any, parent: Any = None, **extra: Any) -> dict[str, Any]:
    # The CLI's own key order: type first, then event.
    return {"type": "stream_event", "event": event, "session_id": "c1", **extra} | {
        "parent_tool_use_id": parent,
        "uuid": "u1",
    }


def read_back(event: Event | EncodedEvent) -> Envelope:
    body = encode_with_header(HEADER, 1.5, event)
    return Envelope.from_json(b'{"seq":1,' + body)


def parsed_event(raw: bytes) -> Event:
    (event,) = parse_line(raw).events
    assert event.type is EventType.STREAM_EVENT
    return event


def assert_as_parsed(raw: bytes) -> EncodedEvent:
    printed = stream_event_as_printed(raw)
    assert printed is not None, raw
    assert read_back(printed) == read_back(parsed_event(raw))
    assert printed.decoded() == parsed_event(raw)
    return printed


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.text(max_size=8), finite_json_values, max_size=5),
    st.none() | st.text(max_size=12) | st.integers() | st.booleans(),
)
def test_any_event_object_reads_back_as_parse_line_made_it(event: Any, parent: Any) -> None:
    assert_as_parsed(compact(stream_line(event, parent)))


def test_a_text_delta_is_taken_byte_for_byte() -> None:
    text = 'caf\u00e9 \u65e5\u672c "q" \\ \n \u2028 \U0001f600'
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    printed = assert_as_parsed(compact(stream_line(delta, "toolu_1")))
    assert compact(delta) in printed.data_json  # spliced in, not encoded again
    assert read_back(printed).data["parent_tool_use_id"] == "toolu_1"


def test_an_unknown_key_and_a_non_string_parent_read_as_parse_line_has_them() -> None:
    printed = assert_as_parsed(compact(stream_line({"a": 1}, parent=7, extra={"x": [1, 2]})))
    assert read_back(printed).data == {"event": {"a": 1}, "parent_tool_use_id": None}


def test_numbers_past_64_bits_and_long_floats_read_back_alike() -> None:
    assert_as_parsed(compact(stream_line({"big": 2**70, "f": 0.1, "neg": -(2**65), "e": 1e300})))


def test_a_number_past_a_doubles_range_reads_as_infinity_not_null() -> None:
    # The one known difference from parse_line (documented in stream_event_as_printed).
    raw = b'{"type":"stream_event","event":{"a":1e400},"parent_tool_use_id":null}'
    printed = stream_event_as_printed(raw)
    assert printed is not None
    assert read_back(printed).data["event"] == {"a": float("inf")}
    assert read_back(parsed_event(raw)).data["event"] == {"a": None}


@pytest.mark.parametrize(
    "raw",
    [
        # spaced JSON (json.dumps' default) and other key orders: parse_line's
        compact({"event": {}, "type": "stream_event"}),
        json.dumps(stream_line({"a": 1})).encode(),
        # not a stream event after all: a later "type" wins, as in parse_line
        b'{"type":"stream_event","event":{},"type":"result"}',
        compact({"type": "stream_event"}),  # no event
        compact(stream_line([1, 2])),  # not an object
        compact(stream_line("text")),
        compact(stream_line(None)),
        b'{"type":"stream_event","event":{"a":"\xff\xfe"}}',  # invalid UTF-8 in what is skipped
        b'{"type":"stream_event","event":{"a":"\\ud800"}}',  # a lone surrogate
        b'{"type":"stream_event","event":{"a":tru}}',  # malformed
        b'{"type":"stream_event","event":{"a":1}',  # cut short
        b'{"type":"stream_event","event":{"a":1}} trailing',
        compact(stream_line({"deep": json.loads("[" * 250 + "]" * 250)})),  # nests too deep
    ],
)
def test_what_it_declines_goes_to_parse_line(raw: bytes) -> None:
    assert stream_event_as_printed(raw) is None
    parse_line(raw)  # which never raises


def test_an_oversized_event_is_truncated_from_its_decoded_form() -> None:
    store = FakeRunStore()
    publisher = run_publisher(store, max_event_bytes=4096)
    text = "y" * 10_000
    printed = stream_event_as_printed(compact(stream_line({"delta": {"text": text}})))
    assert printed is not None
    publisher.add(printed)
    publisher.flush()
    (envelope,) = store.envelopes("s")
    data = envelope.typed_data()
    assert isinstance(data, StreamEventData)
    kept = data.event["delta"]["text"]
    assert kept.startswith("yyy") and "truncated" in kept and len(kept) < 4096
