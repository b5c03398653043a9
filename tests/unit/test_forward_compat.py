"""A newer worker's event types, fields and enum values pass through readers as data."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from producer.cancelling import CancelWait
from producer.cursor import SeqCursor, decode_page, finished_of, live_envelope
from producer.render import Renderer
from shared.blocks import TextBlock, UnknownBlock
from shared.events import (
    DATA_MODELS,
    DecisionReason,
    Envelope,
    ErrorCode,
    ErrorData,
    EventData,
    EventType,
    FinishedData,
    InitData,
    InterruptedData,
    MessageData,
    PermissionDecisionData,
    PermissionRequestData,
    QueuedData,
    RateLimitData,
    ResultData,
    RetryData,
    RunStatus,
    StartedData,
    StreamEventData,
    TextData,
    UnknownEventData,
    WaitingData,
)

RUN_ID = "0123456789abcdef0123456789abcdef"

# One valid payload per known type, built by the strict (writer) models.
SAMPLES: dict[EventType, EventData] = {
    EventType.QUEUED: QueuedData(profile="readonly", metadata={"ticket": 7}),
    EventType.STARTED: StartedData(worker="w1", host="h1", pid=42),
    EventType.INIT: InitData(claude_session_id="c1", model="m", tools=["Bash"]),
    EventType.MESSAGE: MessageData(role="assistant", content=[TextBlock(text="hi")]),
    EventType.STREAM_EVENT: StreamEventData(event={"type": "message_start"}),
    EventType.RESULT: ResultData(is_error=False, result="ok", num_turns=1, total_cost_usd=0.1),
    EventType.ERROR: ErrorData(code=ErrorCode.TIMEOUT, message="too slow"),
    EventType.TEXT: TextData(text="plain line"),
    EventType.RATE_LIMIT: RateLimitData(status="allowed", resets_at=1),
    EventType.RETRY: RetryData(attempt=1, max_retries=3, retry_delay_ms=500),
    EventType.INTERRUPTED: InterruptedData(reason="cancelled"),
    EventType.PERMISSION_REQUEST: PermissionRequestData(
        request_id="r1", tool_name="Bash", input={"command": "ls"}, expires_at=1.5
    ),
    EventType.PERMISSION_DECISION: PermissionDecisionData(
        request_id="r1", behavior="deny", reason=DecisionReason.TIMED_OUT
    ),
    EventType.WAITING: WaitingData(reason="concurrency_limit", key="tenant-a"),
    EventType.FINISHED: FinishedData(status=RunStatus.SUCCEEDED, exit_code=0, duration_s=1.5),
}

ADDED_FIELD = {"added_by_newer_worker": {"nested": [1, "two", None]}}


def raw_envelope(event_type: str, data: dict[str, Any], **top: Any) -> bytes:
    """An envelope as a newer worker would write it to the log and the channel."""
    fields = {
        "seq": 5,
        "session_id": "s1",
        "run_id": RUN_ID,
        "ts": 1.25,
        "type": event_type,
        "data": data,
    }
    return json.dumps(fields | top).encode()


def rendered(envelope: Envelope) -> str:
    out = io.StringIO()
    Renderer(Console(file=out, width=200, highlight=False, color_system=None)).show(envelope)
    return out.getvalue()


def test_every_known_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EventType) == set(DATA_MODELS)


# --------------------------------------------------------------------------- new type


def test_unknown_type_parses_and_round_trips_verbatim() -> None:
    data = {"tool": "Bash", "options": ["allow", "deny"], "deep": {"a": [1.5, None]}}
    raw = raw_envelope("approval_requested", data)
    envelope = Envelope.from_json(raw)
    assert envelope.type == "approval_requested"
    assert not isinstance(envelope.type, EventType)
    assert not envelope.is_known_type
    assert not envelope.is_terminal
    assert envelope.data == data
    assert json.loads(envelope.model_dump_json()) == json.loads(raw)
    assert Envelope.from_json(envelope.model_dump_json()) == envelope


def test_unknown_type_typed_data_carries_the_raw_payload() -> None:
    data = {"tool": "Bash"}
    typed = Envelope.from_json(raw_envelope("approval_requested", data)).typed_data()
    assert typed == UnknownEventData(event_type="approval_requested", data=data)


def test_unknown_type_renders_as_one_generic_line() -> None:
    text = rendered(Envelope.from_json(raw_envelope("approval_requested", {"tool": "Bash"})))
    assert text.count("\n") == 1
    assert "approval_requested" in text
    assert '"tool": "Bash"' in text


def test_unknown_type_named_like_a_renderer_method_still_renders_generically() -> None:
    # "_on_" + type must never reach a private method for a type we do not know.
    text = rendered(Envelope.from_json(raw_envelope("finished_v2", {"status": "done"})))
    assert "finished_v2" in text
    assert "■" not in text


def test_unknown_type_does_not_stop_a_cursor_waiting_for_finish() -> None:
    cursor = SeqCursor(last_seq=4, stop_at_finish=True, run_id=RUN_ID)
    envelope = Envelope.from_json(raw_envelope("approval_requested", {}))
    cursor.delivered(envelope)
    assert cursor.last_seq == 5
    assert not cursor.done
    assert finished_of(envelope, RUN_ID) is None


def test_log_page_and_live_message_decode_unknown_types() -> None:
    raw = raw_envelope("approval_requested", {"x": 1}, trace_id="t1")
    page = decode_page([(b"5-0", {b"e": raw})])
    live = live_envelope({"type": "message", "channel": b"c", "data": raw})
    assert page == [live]
    assert live is not None
    assert live.type == "approval_requested"


# --------------------------------------------------------------------------- new fields


def test_unknown_top_level_field_is_kept() -> None:
    raw = raw_envelope("text", {"text": "x"}, worker_version="9.1", trace={"id": "t"})
    envelope = Envelope.from_json(raw)
    assert envelope.type is EventType.TEXT
    assert json.loads(envelope.model_dump_json()) == json.loads(raw)
    assert envelope.model_extra == {"worker_version": "9.1", "trace": {"id": "t"}}
    assert "x" in rendered(envelope)


@pytest.mark.parametrize("event_type", list(EventType))
def test_new_fields_in_known_payloads_are_read_and_passed_through(event_type: EventType) -> None:
    sample = SAMPLES[event_type]
    data = sample.model_dump(mode="json") | ADDED_FIELD
    envelope = Envelope.from_json(raw_envelope(event_type.value, data))
    assert envelope.type is event_type
    assert envelope.data == data  # the raw payload keeps the new field
    assert envelope.typed_data() == sample  # the typed view ignores it
    again = Envelope.from_json(envelope.model_dump_json())
    assert again == envelope
    rendered(envelope)  # must not raise


@pytest.mark.parametrize("event_type", list(EventType))
def test_writers_stay_strict_about_unknown_fields(event_type: EventType) -> None:
    data = SAMPLES[event_type].model_dump(mode="json") | ADDED_FIELD
    with pytest.raises(ValidationError) as info:
        DATA_MODELS[event_type].model_validate(data)
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_new_fields_inside_content_blocks_and_new_block_types_are_kept() -> None:
    content = [
        {"type": "text", "text": "hi", "citations": [{"url": "u"}]},
        {"type": "hologram", "frames": 3},
    ]
    data = {"role": "assistant", "content": content, "tone": "new"}
    typed = Envelope.from_json(raw_envelope("message", data)).typed_data()
    assert isinstance(typed, MessageData)
    text, hologram = typed.content
    assert isinstance(text, TextBlock)
    assert text.model_extra == {"citations": [{"url": "u"}]}
    assert isinstance(hologram, UnknownBlock)
    assert hologram.model_dump() == content[1]


# --------------------------------------------------------------------------- new enum values


def test_new_error_code_is_read_as_its_string() -> None:
    data = {"code": "quota_exhausted", "message": "no quota left", "detail": {}, "retry_s": 30}
    envelope = Envelope.from_json(raw_envelope("error", data))
    typed = envelope.typed_data()
    assert isinstance(typed, ErrorData)
    assert typed.code == "quota_exhausted"
    assert not isinstance(typed.code, ErrorCode)
    assert json.loads(typed.model_dump_json())["code"] == "quota_exhausted"
    assert "quota_exhausted" in rendered(envelope)


def test_known_error_code_is_still_the_enum_member() -> None:
    data = {"code": "log_budget_exceeded", "message": "too much"}
    typed = Envelope.from_json(raw_envelope("error", data)).typed_data()
    assert isinstance(typed, ErrorData)
    assert typed.code is ErrorCode.LOG_BUDGET_EXCEEDED


def test_new_run_status_still_ends_the_run() -> None:
    data = {"status": "paused_for_approval", "duration_s": 2.0, "approval_id": "a1"}
    envelope = Envelope.from_json(raw_envelope("finished", data))
    assert envelope.type is EventType.FINISHED
    assert envelope.is_terminal
    cursor = SeqCursor(last_seq=4, stop_at_finish=True, run_id=RUN_ID)
    cursor.delivered(envelope)
    assert cursor.done
    assert CancelWait(RUN_ID, 10.0).is_done(envelope)
    finished = finished_of(envelope, RUN_ID)
    assert finished is not None
    assert finished.status == "paused_for_approval"
    assert finished.status is not RunStatus.SUCCEEDED
    assert json.loads(envelope.model_dump_json())["data"] == data
    text = rendered(envelope)
    assert "paused_for_approval" in text
    assert "in 2.00s" in text


def test_writers_refuse_unknown_enum_values() -> None:
    with pytest.raises(ValidationError, match="paused"):
        FinishedData(status="paused", duration_s=1.0)
    with pytest.raises(ValidationError, match="quota_exhausted"):
        ErrorData(code="quota_exhausted", message="m")
    assert FinishedData(status="failed", duration_s=1.0).status is RunStatus.FAILED


# --------------------------------------------------------------------------- reshaped payloads


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("message", {"role": "assistant", "content": "now a plain string"}),
        ("message", {"role": "assistant", "content": [["a", "list"], 7]}),
        ("finished", {"status": "succeeded", "duration_s": "soon"}),
        ("stream_event", {"event": ["not", "a", "dict"]}),
    ],
)
def test_render_shows_a_reshaped_known_payload_generically(
    event_type: str, data: dict[str, Any]
) -> None:
    text = rendered(Envelope.from_json(raw_envelope(event_type, data)))
    assert event_type in text


def test_known_type_missing_required_fields_still_raises_on_typed_data() -> None:
    envelope = Envelope.from_json(raw_envelope("finished", {"new_only": 1}))
    assert envelope.is_terminal
    with pytest.raises(ValidationError):
        envelope.typed_data()
