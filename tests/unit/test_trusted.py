"""shared/trusted.py: the parser's unvalidated models are the models validation makes.

For every event the parser makes from an arbitrary line: its data holds every field
in the model's order, validation of its dump gives it back (so nothing in it breaks
its model's types), and building it with validation gives an equal model with the
same fields set and the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel, ValidationError

from shared.blocks import TextBlock
from shared.events import Event, EventType, MessageData, StreamEventData
from shared.trusted import trusted
from tests.unit.test_parser import lines
from worker.parser import parse_line


def assert_as_validated(model: BaseModel) -> None:
    kind = type(model)
    assert list(model.__dict__) == list(kind.model_fields)
    validated = kind(**model.__dict__)
    assert validated == model
    assert validated.model_fields_set == model.model_fields_set
    assert validated.model_dump_json() == model.model_dump_json()
    assert kind.model_validate(model.model_dump()) == model


def assert_as_constructed(event: Event) -> None:
    # An Event is made unvalidated either way: validating one would turn its data,
    # a subclass of its field's type, into a bare EventData.
    constructed = Event.model_construct(type=event.type, data=event.data)
    assert list(event.__dict__) == list(Event.model_fields)
    assert constructed == event
    assert constructed.model_fields_set == event.model_fields_set
    assert constructed.model_dump_json() == event.model_dump_json()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_every_parsed_event_is_what_validation_would_make(obj: dict[str, Any]) -> None:
    for event in parse_line(json.dumps(obj).encode()).events:
        assert_as_constructed(event)
        assert_as_validated(event.data)


def test_a_message_and_a_stream_event() -> None:
    message = trusted(
        MessageData,
        {
            "role": "assistant",
            "content": [TextBlock(text="hi")],
            "message_id": "m1",
            "model": None,
            "parent_tool_use_id": None,
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3},
        },
    )
    assert_as_validated(message)
    stream = trusted(StreamEventData, {"event": {"type": "ping"}, "parent_tool_use_id": None})
    assert_as_validated(stream)
    assert_as_constructed(trusted(Event, {"type": EventType.STREAM_EVENT, "data": stream}))


def test_a_value_of_the_wrong_type_is_the_callers_bug_and_validation_says_so() -> None:
    # What the contract rules out, shown: trusted does not check, validation does.
    wrong = trusted(StreamEventData, {"event": "not a dict", "parent_tool_use_id": None})
    with pytest.raises(ValidationError):
        StreamEventData.model_validate(dict(wrong.__dict__))
