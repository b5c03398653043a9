"""Unit tests for worker.parser.parse_line: one CLI stream-json line in, typed events out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.blocks import (
    ImageBlock,
    MalformedBlock,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownBlock,
)
from shared.events import (
    DATA_MODELS,
    Envelope,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    InitData,
    MessageData,
    RateLimitData,
    ResultData,
    StreamEventData,
    TextData,
)
from tests.fakes import FakeRunStore, run_publisher
from worker.parser import Parsed, parse_line
from worker.parser import _parse_text as parser_text_path

SESSION = "0b6a4c3e-1f7e-4a51-9a8c-2d3f4e5a6b7c"


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def only_event(parsed: Parsed, event_type: EventType) -> Event:
    assert [e.type for e in parsed.events] == [event_type], parsed
    return parsed.events[0]


def message_of(obj: dict[str, Any]) -> MessageData:
    event = only_event(parse_line(line(obj)), EventType.MESSAGE)
    assert isinstance(event.data, MessageData)
    return event.data


def error_of(event: Event) -> ErrorData:
    assert event.type is EventType.ERROR
    assert isinstance(event.data, ErrorData)
    return event.data


def assistant(*blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-5-5",
            "content": list(blocks),
            "stop_reason": None,
            "usage": {"input_tokens": 10, "output_tokens": 2},
        },
        "parent_tool_use_id": None,
        "session_id": SESSION,
        **extra,
    }


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "session_id": SESSION,
        **extra,
    }


# --------------------------------------------------------------------------- system


def test_system_init_becomes_one_init_event() -> None:
    parsed = parse_line(
        line(
            {
                "type": "system",
                "subtype": "init",
                "cwd": "/work",
                "session_id": SESSION,
                "tools": ["Bash", "Read", 7, None],
                "model": "claude-opus-5-5",
                "permissionMode": "acceptEdits",
                "claude_code_version": "2.1.330",
                "mcp_servers": [],
            }
        )
    )
    assert parsed.skipped is None
    data = only_event(parsed, EventType.INIT).data
    assert isinstance(data, InitData)
    assert data.claude_session_id == SESSION
    assert data.model == "claude-opus-5-5"
    assert data.tools == ["Bash", "Read"]  # non-strings dropped
    assert data.cwd == "/work"
    assert data.permission_mode == "acceptEdits"
    assert data.cli_version == "2.1.330"


def test_system_init_with_garbage_fields_still_yields_init() -> None:
    parsed = parse_line(line({"type": "system", "subtype": "init", "tools": "Bash", "model": 3}))
    data = only_event(parsed, EventType.INIT).data
    assert isinstance(data, InitData)
    assert data.tools == []
    assert data.model is None
    assert data.claude_session_id is None


@pytest.mark.parametrize("subtype", ["status", "thinking_tokens", "permission_denied", None])
def test_other_system_subtypes_are_skipped(subtype: str | None) -> None:
    parsed = parse_line(line({"type": "system", "subtype": subtype, "session_id": SESSION}))
    assert parsed.events == []
    assert parsed.skipped is not None
    assert str(subtype) in parsed.skipped


# --------------------------------------------------------------------------- assistant


def test_assistant_text_message() -> None:
    data = message_of(assistant({"type": "text", "text": "Hello!"}))
    assert data.role == "assistant"
    assert data.content == [TextBlock(text="Hello!")]
    assert data.message_id == "msg_1"
    assert data.model == "claude-opus-5-5"
    assert data.usage == {"input_tokens": 10, "output_tokens": 2}
    assert data.parent_tool_use_id is None


def test_assistant_thinking_keeps_signature() -> None:
    data = message_of(assistant({"type": "thinking", "thinking": "hmm", "signature": "c2ln"}))
    (block,) = data.content
    assert isinstance(block, ThinkingBlock)
    assert block.thinking == "hmm"
    assert block.signature == "c2ln"


def test_assistant_tool_use_block() -> None:
    data = message_of(
        assistant(
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            parent_tool_use_id="toolu_0",
        )
    )
    (block,) = data.content
    assert isinstance(block, ToolUseBlock)
    assert (block.id, block.name, block.input) == ("toolu_1", "Bash", {"command": "ls"})
    assert data.parent_tool_use_id == "toolu_0"


def test_assistant_redacted_thinking_server_tool_use_and_image_blocks() -> None:
    data = message_of(
        assistant(
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}},
        )
    )
    redacted, server, image = data.content
    assert isinstance(redacted, RedactedThinkingBlock)
    assert redacted.data == "opaque"
    assert isinstance(server, ServerToolUseBlock)
    assert server.name == "web_search"
    assert isinstance(image, ImageBlock)
    assert image.source["media_type"] == "image/png"


def test_known_block_keeps_extra_fields() -> None:
    data = message_of(assistant({"type": "text", "text": "x", "citations": [{"url": "u"}]}))
    dumped = json.loads(data.model_dump_json())
    assert dumped["content"][0] == {"type": "text", "text": "x", "citations": [{"url": "u"}]}


def test_unknown_block_kept_verbatim_and_round_trips() -> None:
    raw = {"type": "hologram", "frames": [1, 2, 3], "meta": {"fps": 24}, "label": "x"}
    data = message_of(assistant({"type": "text", "text": "before"}, raw))
    text, unknown = data.content
    assert isinstance(text, TextBlock)
    assert isinstance(unknown, UnknownBlock)
    assert unknown.type == "hologram"
    dumped = json.loads(data.model_dump_json())
    assert dumped["content"][1] == raw
    again = MessageData.model_validate_json(data.model_dump_json())
    assert isinstance(again.content[1], UnknownBlock)
    assert again.content[1].model_dump() == raw
    assert again == data


def test_non_dict_block_is_kept_as_malformed() -> None:
    raw_obj = assistant()
    raw_obj["message"]["content"] = ["just a string", 5]
    data = message_of(raw_obj)
    assert [type(b) for b in data.content] == [MalformedBlock, MalformedBlock]
    dumped = json.loads(data.model_dump_json())["content"]
    assert dumped == [
        {"type": "malformed", "block": "just a string"},
        {"type": "malformed", "block": 5},
    ]
    assert MessageData.model_validate_json(data.model_dump_json()) == data


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "text"},  # missing text
        {"type": "text", "text": 5},
        {"type": "tool_use", "id": "t"},  # missing name and input
        {"type": "tool_use", "id": "t", "name": "Bash", "input": "not a dict"},
        {"type": "image", "source": None},
        {"type": "malformed"},  # a CLI block that happens to use our wrapper's name
    ],
)
def test_malformed_known_block_is_wrapped_and_round_trips(raw: dict[str, Any]) -> None:
    data = message_of(assistant({"type": "text", "text": "kept"}, raw))
    text, malformed = data.content
    assert text == TextBlock(text="kept")
    assert isinstance(malformed, MalformedBlock)
    assert malformed.block == raw  # the original, untouched
    again = MessageData.model_validate_json(data.model_dump_json())
    assert again == data
    envelope = Envelope(
        seq=1,
        session_id="s",
        run_id="0" * 32,
        ts=0.0,
        type=EventType.MESSAGE,
        data=json.loads(data.model_dump_json()),
    )
    assert envelope.typed_data() == data  # what a client does with it


@pytest.mark.parametrize("odd_type", [["odd"], {"k": 1}, 5, None, True])
def test_block_with_non_string_type_keeps_the_message(odd_type: Any) -> None:
    raw = {"type": odd_type, "payload": 1}
    data = message_of(assistant({"type": "text", "text": "keep me"}, raw))
    assert data.content[0] == TextBlock(text="keep me")
    kept = data.content[1]
    assert isinstance(kept, MalformedBlock | UnknownBlock)
    assert json.loads(kept.model_dump_json()) in (raw, {"type": "malformed", "block": raw})
    assert MessageData.model_validate_json(data.model_dump_json()) == data


def test_assistant_authentication_error_becomes_only_an_error_event() -> None:
    parsed = parse_line(
        line(
            assistant(
                {"type": "text", "text": "Not logged in · Please run /login"},
                error="authentication_failed",
            )
        )
    )
    event = only_event(parsed, EventType.ERROR)
    data = error_of(event)
    assert data.code is ErrorCode.AUTHENTICATION
    assert data.code.value == "authentication_failed"
    assert data.message == "Not logged in · Please run /login"
    assert all(e.type is not EventType.MESSAGE for e in parsed.events)


def test_assistant_other_top_level_error_is_cli_error() -> None:
    parsed = parse_line(
        line(assistant({"type": "text", "text": "API Error: 500"}, error="server_error"))
    )
    data = error_of(only_event(parsed, EventType.ERROR))
    assert data.code is ErrorCode.CLI_ERROR
    assert data.message == "API Error: 500"
    assert data.detail == {"error": "server_error"}


def test_assistant_error_without_text_uses_error_value() -> None:
    parsed = parse_line(line(assistant(error="rate_limit")))
    data = error_of(only_event(parsed, EventType.ERROR))
    assert data.message == "rate_limit"


def test_assistant_without_message_gives_empty_message() -> None:
    data = message_of({"type": "assistant"})
    assert data.content == []
    assert data.role == "assistant"


# --------------------------------------------------------------------------- user


def test_user_tool_result() -> None:
    data = message_of(
        user(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "hello",
                    "is_error": False,
                }
            ]
        )
    )
    assert data.role == "user"
    (block,) = data.content
    assert isinstance(block, ToolResultBlock)
    assert (block.tool_use_id, block.content, block.is_error) == ("toolu_1", "hello", False)


def test_user_tool_result_with_list_content() -> None:
    content = [{"type": "text", "text": "out"}]
    data = message_of(user([{"type": "tool_result", "tool_use_id": "toolu_2", "content": content}]))
    (block,) = data.content
    assert isinstance(block, ToolResultBlock)
    assert block.content == content
    assert block.is_error is None


def test_user_string_content_becomes_text_block() -> None:
    data = message_of(user("please continue"))
    assert data.role == "user"
    assert data.content == [TextBlock(text="please continue")]


@pytest.mark.parametrize("flag", ["isMeta", "isSynthetic"])
def test_user_meta_lines_are_skipped(flag: str) -> None:
    parsed = parse_line(line(user([{"type": "text", "text": "internal"}], **{flag: True})))
    assert parsed.events == []
    assert parsed.skipped is not None


@pytest.mark.parametrize(
    "content",
    [
        "Base directory for this skill: /skills/x\n\nDo the thing",
        [{"type": "text", "text": "  Base directory for this skill: /s"}],
    ],
)
def test_user_skill_injection_is_skipped(content: Any) -> None:
    parsed = parse_line(line(user(content)))
    assert parsed.events == []
    assert parsed.skipped is not None
    assert "skill" in parsed.skipped


def test_user_text_merely_mentioning_skill_prefix_is_kept() -> None:
    data = message_of(user("What does 'Base directory for this skill:' mean?"))
    assert data.content == [TextBlock(text="What does 'Base directory for this skill:' mean?")]


def test_is_meta_false_is_not_skipped() -> None:
    data = message_of(user("hi", isMeta=False))
    assert data.content == [TextBlock(text="hi")]


# --------------------------------------------------------------------------- stream_event


def test_stream_event_passthrough() -> None:
    inner = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "He"},
    }
    parsed = parse_line(
        line(
            {
                "type": "stream_event",
                "event": inner,
                "parent_tool_use_id": "toolu_9",
                "session_id": SESSION,
            }
        )
    )
    data = only_event(parsed, EventType.STREAM_EVENT).data
    assert isinstance(data, StreamEventData)
    assert data.event == inner
    assert data.parent_tool_use_id == "toolu_9"


def test_stream_event_with_non_dict_event() -> None:
    data = only_event(
        parse_line(line({"type": "stream_event", "event": [1]})), EventType.STREAM_EVENT
    ).data
    assert isinstance(data, StreamEventData)
    assert data.event == {}


# --------------------------------------------------------------------------- result


def result_line(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 1234,
        "num_turns": 3,
        "result": "All done.",
        "session_id": SESSION,
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 100, "output_tokens": 20},
        "permission_denials": [],
    }
    base.update(fields)
    return base


def test_result_success() -> None:
    parsed = parse_line(line(result_line()))
    data = only_event(parsed, EventType.RESULT).data
    assert isinstance(data, ResultData)
    assert data.is_error is False
    assert data.subtype == "success"
    assert data.claude_session_id == SESSION
    assert data.total_cost_usd == pytest.approx(0.0123)
    assert data.usage == {"input_tokens": 100, "output_tokens": 20}
    assert data.num_turns == 3
    assert data.duration_ms == 1234
    assert data.result == "All done."


def test_result_integer_cost_and_bool_turns() -> None:
    data = only_event(
        parse_line(line(result_line(total_cost_usd=1, num_turns=True, duration_ms="9"))),
        EventType.RESULT,
    ).data
    assert isinstance(data, ResultData)
    assert data.total_cost_usd == 1.0
    assert data.num_turns is None  # a bool is not a count
    assert data.duration_ms is None


def test_result_success_subtype_but_is_error_true() -> None:
    parsed = parse_line(line(result_line(is_error=True, result="API Error: 401 invalid x-api-key")))
    assert [e.type for e in parsed.events] == [EventType.RESULT, EventType.ERROR]
    result = parsed.events[0].data
    assert isinstance(result, ResultData)
    assert result.is_error is True
    error = error_of(parsed.events[1])
    assert error.code is ErrorCode.RESULT_ERROR
    assert error.message == "API Error: 401 invalid x-api-key"


def test_result_error_max_turns_is_an_error() -> None:
    parsed = parse_line(line(result_line(subtype="error_max_turns", is_error=False, result=None)))
    assert [e.type for e in parsed.events] == [EventType.RESULT, EventType.ERROR]
    result = parsed.events[0].data
    assert isinstance(result, ResultData)
    assert result.is_error is True
    assert result.subtype == "error_max_turns"
    error = error_of(parsed.events[1])
    assert error.code is ErrorCode.RESULT_ERROR
    assert "error_max_turns" in error.message


def test_result_error_message_comes_from_errors_list() -> None:
    parsed = parse_line(
        line(
            result_line(
                subtype="error_during_execution",
                is_error=True,
                result=None,
                errors=["No conversation found with session ID: x", 5, "second"],
            )
        )
    )
    error = error_of(parsed.events[1])
    assert error.code is ErrorCode.RESULT_ERROR
    assert error.message == "No conversation found with session ID: x; second"
    assert error.detail["subtype"] == "error_during_execution"


def test_result_error_text_wins_over_errors_list() -> None:
    parsed = parse_line(line(result_line(is_error=True, result="Boom", errors=["other"])))
    assert error_of(parsed.events[1]).message == "Boom"


def test_api_error_status_is_kept_in_error_detail() -> None:
    parsed = parse_line(
        line(
            assistant(
                {"type": "text", "text": "API Error: 529 Overloaded"},
                error="server_error",
                api_error_status=529,
            )
        )
    )
    assert error_of(only_event(parsed, EventType.ERROR)).detail["api_error_status"] == 529
    parsed = parse_line(line(result_line(is_error=True, api_error_status=529)))
    assert error_of(parsed.events[1]).detail["api_error_status"] == 529


def test_result_permission_denials_kept() -> None:
    denial = {"tool_name": "Bash", "tool_use_id": "toolu_1", "tool_input": {"command": "rm"}}
    data = only_event(
        parse_line(line(result_line(permission_denials=[denial]))), EventType.RESULT
    ).data
    assert isinstance(data, ResultData)
    assert data.permission_denials == [denial]


# --------------------------------------------------------------------------- rate limits


@pytest.mark.parametrize("status", ["allowed", "allowed_warning"])
def test_rate_limit_ok_statuses_produce_no_event(status: str) -> None:
    parsed = parse_line(
        line(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {"status": status, "resetsAt": 1764000000},
            }
        )
    )
    assert parsed.events == []
    assert parsed.skipped is not None
    assert status in parsed.skipped


def test_rate_limit_rejected_becomes_rate_limit_event() -> None:
    info = {"status": "rejected", "rateLimitType": "five_hour", "resetsAt": 1764003600}
    parsed = parse_line(line({"type": "rate_limit_event", "rate_limit_info": info}))
    data = only_event(parsed, EventType.RATE_LIMIT).data
    assert isinstance(data, RateLimitData)
    assert data.status == "rejected"
    assert data.limit_type == "five_hour"
    assert data.resets_at == 1764003600
    assert data.info == info


def test_rate_limit_without_info_is_reported_as_unknown() -> None:
    data = only_event(parse_line(line({"type": "rate_limit_event"})), EventType.RATE_LIMIT).data
    assert isinstance(data, RateLimitData)
    assert data.status == "unknown"


# --------------------------------------------------------------------------- error lines


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"type": "error", "error": "boom"}, "boom"),
        ({"type": "error", "error": {"type": "overloaded", "message": "Overloaded"}}, "Overloaded"),
        ({"type": "error", "message": "top-level"}, "top-level"),
        ({"type": "error"}, "the CLI reported an error"),
    ],
)
def test_error_line(obj: dict[str, Any], message: str) -> None:
    data = error_of(only_event(parse_line(line(obj)), EventType.ERROR))
    assert data.code is ErrorCode.CLI_ERROR
    assert data.message == message
    assert data.detail["line"] == obj


# --------------------------------------------------------------------------- odd input


def test_non_json_line_becomes_text_event() -> None:
    parsed = parse_line(b"  Warning: something odd happened  ")
    data = only_event(parsed, EventType.TEXT).data
    assert isinstance(data, TextData)
    assert data.text == "Warning: something odd happened"


@pytest.mark.parametrize(
    "raw",
    [b'{"subtype": "init"}', b"[1, 2, 3]", b'{"type": 5}', b'{"type": null}', b"42", b'"s"'],
)
def test_json_without_string_type_is_missing_type(raw: bytes) -> None:
    data = error_of(only_event(parse_line(raw), EventType.ERROR))
    assert data.code is ErrorCode.MISSING_TYPE
    assert data.detail["line"] == raw.decode()


def test_missing_type_preview_is_bounded() -> None:
    raw = json.dumps({"blob": "x" * 10_000}).encode()
    data = error_of(only_event(parse_line(raw), EventType.ERROR))
    assert len(data.detail["line"]) < 1000


def test_unknown_type_is_skipped_and_named() -> None:
    parsed = parse_line(line({"type": "telemetry_ping", "x": 1}))
    assert parsed.events == []
    assert parsed.skipped is not None
    assert "telemetry_ping" in parsed.skipped
    assert parsed.skipped.startswith("unknown")


@pytest.mark.parametrize("raw", [b"", b"   ", b"\t\r", b"\r"])
def test_blank_line_gives_nothing(raw: bytes) -> None:
    parsed = parse_line(raw)
    assert parsed.events == []
    assert parsed.skipped == "blank line"


def test_invalid_utf8_in_json_string_does_not_raise() -> None:
    parsed = parse_line(b'{"type": "error", "error": "bad \xff\xfe bytes"}')
    data = error_of(only_event(parsed, EventType.ERROR))
    assert data.message == "bad \ufffd\ufffd bytes"


def test_invalid_utf8_text_line_does_not_raise() -> None:
    data = only_event(parse_line(b"\xc3\x28 not json \xff"), EventType.TEXT).data
    assert isinstance(data, TextData)
    assert "\ufffd" in data.text
    data.model_dump_json()


def test_very_deep_json_does_not_raise() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    parsed = parse_line(raw)
    assert len(parsed.events) == 1
    parsed.events[0].data.model_dump_json()


def test_deeply_nested_line_degrades_to_an_error_event_when_published() -> None:
    # json.loads accepts ~1000 levels, pydantic serialises ~255: the publisher must
    # turn such an event into an error event instead of failing the run.
    nested: Any = "leaf"
    for _ in range(300):
        nested = [nested]
    parsed = parse_line(line({"type": "stream_event", "event": {"deep": nested}}))
    assert [e.type for e in parsed.events] == [EventType.STREAM_EVENT]
    store = FakeRunStore()
    run_publisher(store).publish(parsed.events[0])
    (envelope,) = store.envelopes("s")
    assert envelope.type is EventType.ERROR
    assert "could not be encoded" in envelope.data["message"]
    assert envelope.data["detail"] == {"event_type": "stream_event"}


# --------------------------------------------------------------------------- properties


def assert_well_formed(parsed: Parsed) -> None:
    assert isinstance(parsed, Parsed)
    for event in parsed.events:
        if isinstance(event.data, ErrorData):
            # "could not parse a ... line" is the parser's crash fallback: never expected
            assert not event.data.message.startswith("could not parse"), event.data
        assert isinstance(event.type, EventType)
        assert isinstance(event.data, DATA_MODELS[event.type])
        dumped = event.data.model_dump_json()
        assert isinstance(json.loads(dumped), dict)
    if not parsed.events:
        assert parsed.skipped


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parse_line_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert_well_formed(parse_line(raw))


LINE_TYPES = [
    "system",
    "assistant",
    "user",
    "result",
    "stream_event",
    "rate_limit_event",
    "error",
]
BLOCK_TYPES = [
    "text",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "server_tool_use",
    "tool_result",
    "image",
    "hologram",
]
FIELD_NAMES = [
    "type",
    "subtype",
    "message",
    "content",
    "text",
    "thinking",
    "signature",
    "data",
    "id",
    "name",
    "input",
    "tool_use_id",
    "is_error",
    "source",
    "result",
    "session_id",
    "error",
    "rate_limit_info",
    "status",
    "resetsAt",
    "rateLimitType",
    "event",
    "tools",
    "model",
    "isMeta",
    "isSynthetic",
    "usage",
    "num_turns",
    "total_cost_usd",
    "duration_ms",
    "permission_denials",
    "parent_tool_use_id",
    "stop_reason",
]

field_names = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        ["init", "success", "error_max_turns", "rejected", "allowed", "authentication_failed"]
    )
    | st.just("Base directory for this skill: /x")
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    block = st.fixed_dictionaries(
        {"type": st.sampled_from(BLOCK_TYPES) | children},
        optional={name: children for name in FIELD_NAMES if name != "type"},
    )
    return (
        st.lists(children, max_size=4)
        | st.dictionaries(field_names, children, max_size=4)
        | block
        | st.lists(block, max_size=3)
    )


json_values = st.recursive(scalars, _containers, max_leaves=20)
short_text = st.text(max_size=20)


def _well_formed_blocks(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed blocks of every type (plus unknown ones), each with random extra fields."""
    extras = st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=2)

    def block(required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.tuples(st.fixed_dictionaries(required), extras).map(
            lambda pair: {**pair[1], **pair[0]}
        )

    return st.one_of(
        block({"type": st.just("text"), "text": short_text}),
        block(
            {
                "type": st.just("thinking"),
                "thinking": short_text,
                "signature": st.none() | short_text,
            }
        ),
        block({"type": st.just("redacted_thinking"), "data": short_text}),
        block(
            {
                "type": st.sampled_from(["tool_use", "server_tool_use"]),
                "id": short_text,
                "name": short_text,
                "input": st.dictionaries(short_text, values, max_size=3),
            }
        ),
        block(
            {
                "type": st.just("tool_result"),
                "tool_use_id": short_text,
                "content": st.none() | short_text | st.lists(values, max_size=2),
                "is_error": st.none() | st.booleans(),
            }
        ),
        block({"type": st.just("image"), "source": st.dictionaries(short_text, values)}),
        block({"type": st.sampled_from(["hologram", "citation_v9", ""])}),
    )


# What real JSON can hold: no NaN/Infinity (those serialise back as null).
finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
well_formed_blocks = _well_formed_blocks(json_values)
random_blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(BLOCK_TYPES) | scalars},
    optional={name: json_values for name in FIELD_NAMES if name != "type"},
)
contents = st.lists(well_formed_blocks | random_blocks, max_size=4) | json_values
messages = st.fixed_dictionaries(
    {"content": contents},
    optional={"id": json_values, "model": scalars, "usage": json_values},
)
line_types = st.sampled_from(LINE_TYPES) | st.text(max_size=10)

generic_lines = st.fixed_dictionaries(
    {"type": line_types},
    optional={
        "message": messages | messages | json_values,
        "subtype": st.sampled_from(["init", "success", "error_max_turns", "status"]) | scalars,
        "is_error": scalars,
        "error": scalars | json_values,
        "isMeta": scalars,
        "session_id": scalars,
        "tools": st.lists(short_text | scalars, max_size=4) | json_values,
        "event": json_values,
        "rate_limit_info": st.fixed_dictionaries(
            {
                "status": st.sampled_from(["allowed", "allowed_warning", "rejected"]) | scalars,
            },
            optional={"resetsAt": scalars, "rateLimitType": scalars},
        )
        | json_values,
        "result": scalars,
        "num_turns": scalars,
        "total_cost_usd": scalars,
        "usage": json_values,
        "permission_denials": json_values,
        "parent_tool_use_id": scalars,
        "extra": json_values,
    },
)
message_lines = st.fixed_dictionaries(
    {"type": st.sampled_from(["assistant", "user"]), "message": messages},
    optional={
        "error": st.sampled_from(["authentication_failed", "server_error"]) | scalars,
        "isMeta": st.booleans(),
        "isSynthetic": st.booleans(),
        "parent_tool_use_id": scalars,
        "session_id": scalars,
    },
)
lines = message_lines | generic_lines


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_parse_line_never_raises_on_arbitrary_typed_json(obj: dict[str, Any]) -> None:
    parsed = parse_line(json.dumps(obj).encode())
    assert_well_formed(parsed)
    if obj["type"] in ("assistant", "result", "stream_event", "error") or (
        obj["type"] == "system" and obj.get("subtype") == "init"
    ):
        # these types always produce at least one event
        assert parsed.events


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_parse_line_never_raises_on_arbitrary_json_objects(obj: dict[str, Any]) -> None:
    assert_well_formed(parse_line(json.dumps(obj).encode()))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["assistant", "user"]),
    st.lists(_well_formed_blocks(finite_json_values), min_size=1, max_size=5),
)
def test_well_formed_blocks_are_all_kept_and_round_trip(
    role: str, blocks: list[dict[str, Any]]
) -> None:
    raw_line = {"type": role, "message": {"role": role, "content": blocks}}
    parsed = parse_line(json.dumps(raw_line).encode())
    if parsed.skipped is not None:  # a user text block that looks like a skill injection
        assert role == "user"
        return
    data = message_of(raw_line)
    assert len(data.content) == len(blocks)  # no block is ever dropped
    for block, raw in zip(data.content, blocks, strict=True):
        assert block.type == raw["type"]
        assert isinstance(block, UnknownBlock) == (raw["type"] not in BLOCK_TYPES[:-1])
        assert json.loads(block.model_dump_json()) == json.loads(json.dumps(raw))
    again = MessageData.model_validate_json(data.model_dump_json())
    assert again.model_dump_json() == data.model_dump_json()


def _same_as_the_text_path(raw: bytes) -> None:
    """parse_line reads valid JSON from the bytes; the text path (json.loads on the
    decoded text, as before) must give the same events for any line."""
    fast, text = parse_line(raw), parser_text_path(raw)
    assert repr(fast.events) == repr(text.events)  # -0.0 and 0.0 differ here, too
    assert (fast.skipped, fast.control) == (text.skipped, text.control)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(lines, st.booleans(), st.sampled_from(["", " ", "\r", "\t "]))
def test_bytes_and_text_paths_agree_on_typed_lines(
    obj: dict[str, Any], ascii_only: bool, padding: str
) -> None:
    raw = (padding + json.dumps(obj, ensure_ascii=ascii_only) + padding).encode()
    _same_as_the_text_path(raw)


@given(st.binary(max_size=200))
def test_bytes_and_text_paths_agree_on_arbitrary_bytes(raw: bytes) -> None:
    _same_as_the_text_path(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"result","total_cost_usd":NaN,"is_error":false}',  # json.loads only
        b'{"type":"result","total_cost_usd":1e400,"is_error":false}',
        b'{"type":"result","num_turns":99999999999999999999,"is_error":false}',
        b'{"type":"text","type":"result","is_error":true}',  # the last key wins
        b'\xef\xbb\xbf{"type":"result"}',  # a byte order mark
        b'{"type":"assistant","message":{"content":"caf\xc3\xa9 \\ud800"}}',
        b'{"type":"assistant","message":{"content":"\xff"}}',
        b"[" * 2000 + b"]" * 2000,
        b"  \r",
    ],
)
def test_bytes_and_text_paths_agree_on_edge_cases(raw: bytes) -> None:
    _same_as_the_text_path(raw)
