"""Events: what a run produces, and the envelope every client receives.

Envelope, as JSON on the wire and in the session log:

    {"seq": 7, "session_id": "s1", "run_id": "9f…", "ts": 1764000000.123,
     "type": "message", "data": {...}}

`seq` is per session and increases by exactly one per event, across runs.

Forward compatibility: during a rolling upgrade a newer worker may publish event
types, fields and enum values this code does not know. Writers stay strict (our
own bugs fail loudly); readers keep what they do not know: an unknown `type` stays
a plain string, unknown fields stay in `data`, and `typed_data()` ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self, cast

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from shared.blocks import ContentBlock

# The enums live in shared/event_enums.py; they are imported from here too (pyproject:
# mypy's implicit_reexport for this module).
from shared.event_enums import (
    EVENT_TYPE_OF,
    READING,
    TERMINAL_EVENT_TYPES,
    ColdReason,  # noqa: F401  (re-exported)
    DecisionReason,  # noqa: F401  (re-exported)
    ErrorCode,  # noqa: F401  (re-exported)
    EventType,
    OpenColdReason,
    OpenDecisionReason,
    OpenErrorCode,
    OpenRunStatus,
    RunStatus,
    is_reading,
)


class EventData(BaseModel):
    # Strict for writers, so our own bugs fail loudly; readers go through validate_read.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_newer_fields(cls, value: Any, info: ValidationInfo) -> Any:
        # Only this level: content blocks keep their extra fields (extra="allow").
        if is_reading(info) and isinstance(value, dict):
            return {name: item for name, item in value.items() if name in cls.model_fields}
        return value

    @classmethod
    def validate_read(cls, data: dict[str, Any]) -> Self:
        """Validate a payload as a reader: unknown fields dropped, unknown enum values kept."""
        return cls.model_validate(data, context={READING: True})


class QueuedData(EventData):
    profile: str
    model: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # What was asked, cut to a preview (a replay shows it); None from an older producer.
    prompt: str | None = None


class StartedData(EventData):
    worker: str
    host: str
    pid: int = Field(description="PID of the CLI process.")
    warm: bool = Field(default=False, description="The session's live CLI took this run.")
    cold_reason: OpenColdReason | None = None


class InitData(EventData):
    claude_session_id: str | None = None
    model: str | None = None
    cwd: str | None = None
    permission_mode: str | None = None
    tools: list[str] = Field(default_factory=list)
    cli_version: str | None = None


class MessageData(EventData):
    role: Literal["assistant", "user"]
    content: list[ContentBlock]
    message_id: str | None = None
    model: str | None = None
    parent_tool_use_id: str | None = None
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None


class StreamEventData(EventData):
    event: dict[str, Any]
    parent_tool_use_id: str | None = None

    @property
    def text_delta(self) -> str | None:
        """The answer text this partial event streams, if it is a text delta."""
        match self.event:  # the API's event, verbatim: matched by shape, not modelled
            case {
                "type": "content_block_delta",
                "delta": {"type": "text_delta", "text": str(text)},
            }:
                return text
        return None


class ResultData(EventData):
    subtype: str | None = None
    is_error: bool
    result: str | None = None
    claude_session_id: str | None = None
    total_cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    permission_denials: list[Any] = Field(default_factory=list)


class ErrorData(EventData):
    code: OpenErrorCode
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class TextData(EventData):
    """A line the CLI printed that was not JSON."""

    text: str


class RateLimitData(EventData):
    status: str
    limit_type: str | None = None
    resets_at: int | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class WaitingData(EventData):
    """A run at the head of its session is held back (once per hold): `concurrency_limit`,
    with the limit `key` that is full."""

    reason: str
    key: str | None = None


class RetryData(EventData):
    """The CLI is retrying a failed model request (it says so before waiting)."""

    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: int | None = None
    error_status: int | None = None
    error: str | None = None


class InterruptedData(EventData):
    reason: str


class PermissionRequestData(EventData):
    """The CLI asks whether it may use a tool; the run waits for an answer."""

    request_id: str
    tool_name: str
    input: dict[str, Any] = Field(default_factory=dict)
    tool_use_id: str | None = None
    description: str | None = None
    suggestions: list[Any] = Field(default_factory=list)
    expires_at: float = Field(description="Epoch seconds after which the request is denied.")


class PermissionDecisionData(EventData):
    """How a permission request was decided; exactly one per request."""

    request_id: str
    behavior: Literal["allow", "deny"]
    message: str | None = None
    decided_by: str | None = None
    reason: OpenDecisionReason


class FinishedData(EventData):
    status: OpenRunStatus
    exit_code: int | None = None
    duration_s: float
    claude_session_id: str | None = None
    reason: str | None = None
    stderr_tail: str | None = None
    # The CLI did not exit (exit_code is None): it stays warm for the session's next run.
    kept_warm: bool = False

    @property
    def known_status(self) -> RunStatus | None:
        """`status` if this code knows it; None for a newer worker's status."""
        return self.status if isinstance(self.status, RunStatus) else None


class UnknownEventData(EventData):
    """The payload of an event type this code does not know (from a newer worker), as it came."""

    event_type: str
    data: dict[str, Any]


# What `typed_data()` returns: match on it (isinstance) rather than peeking into `data`.
TypedEventData = (
    QueuedData
    | StartedData
    | InitData
    | MessageData
    | StreamEventData
    | ResultData
    | ErrorData
    | TextData
    | RateLimitData
    | RetryData
    | InterruptedData
    | PermissionRequestData
    | PermissionDecisionData
    | WaitingData
    | FinishedData
    | UnknownEventData
)

DATA_MODELS: dict[EventType, type[EventData]] = {
    EventType.QUEUED: QueuedData,
    EventType.STARTED: StartedData,
    EventType.INIT: InitData,
    EventType.MESSAGE: MessageData,
    EventType.STREAM_EVENT: StreamEventData,
    EventType.RESULT: ResultData,
    EventType.ERROR: ErrorData,
    EventType.TEXT: TextData,
    EventType.RATE_LIMIT: RateLimitData,
    EventType.RETRY: RetryData,
    EventType.INTERRUPTED: InterruptedData,
    EventType.PERMISSION_REQUEST: PermissionRequestData,
    EventType.PERMISSION_DECISION: PermissionDecisionData,
    EventType.WAITING: WaitingData,
    EventType.FINISHED: FinishedData,
}


class Event(BaseModel):
    """An event before it is published: no seq yet."""

    model_config = ConfigDict(frozen=True)

    type: EventType
    data: EventData


class Envelope(BaseModel):
    """What every client sees: one published event."""

    # extra="allow": top-level fields a newer worker adds are kept and dumped again.
    model_config = ConfigDict(extra="allow", frozen=True)

    seq: int = Field(ge=1)
    session_id: str
    run_id: str
    ts: float
    # A known type is an EventType member (so `is EventType.FINISHED` works); another stays a str.
    type: Annotated[EventType | str, Field(union_mode="left_to_right")]
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    @property
    def is_known_type(self) -> bool:
        return isinstance(self.type, EventType)

    def typed_data(self) -> TypedEventData:
        """The payload as its model (FinishedData for `finished`); UnknownEventData if new."""
        # Tolerant of a newer worker: its extra fields are ignored (`data` keeps them) and
        # its enum values stay strings. Still raises ValidationError when a known type
        # lacks a field or has one of the wrong type: that is a broken event, not a new one.
        if not isinstance(self.type, EventType):
            return UnknownEventData(event_type=self.type, data=self.data)
        return cast(TypedEventData, DATA_MODELS[self.type].validate_read(self.data))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        """Validated from JSON, which it keeps: a client that only forwards the envelope
        (the gateway's SSE) then need not encode it again.

        An envelope in the shape our writers produce takes a fast path (msgspec's JSON
        decoder, then a check of every field's JSON type, see _canonical); anything else, including
        everything invalid, is validated by pydantic, which raises as it always did.
        Both give the same envelope (tests/unit/test_envelope_decode.py)."""
        envelope = _canonical(raw)
        if envelope is None:
            envelope = cls.model_validate_json(raw)
            # The JSON goes straight into pydantic's private dict, with no PrivateAttr
            # declared: a model with one runs Python code on every validation (its
            # private defaults set up), which doubled the cost of each envelope read.
            object.__setattr__(envelope, "__pydantic_private__", {"_json": raw})
        return envelope

    def to_json(self) -> str:
        """This envelope as compact JSON: the text it was read from (validated, the
        same envelope), unless that spans lines; else its encoding."""
        # Straight from pydantic's private dict: `self._json` costs ~3 us a read.
        private = self.__pydantic_private__
        raw = None if private is None else private.get("_json")
        if raw is None:
            return self.model_dump_json()
        text = raw.decode() if isinstance(raw, bytes) else raw  # valid UTF-8: it parsed
        if "\n" in text or "\r" in text:
            return self.model_dump_json()
        return text

    def __eq__(self, other: object) -> bool:
        # Two envelopes are equal by their content, however each was made or read.
        if not isinstance(other, Envelope):
            return NotImplemented
        return self.__dict__ == other.__dict__ and self.__pydantic_extra__ == (
            other.__pydantic_extra__
        )

    __hash__ = None  # type: ignore[assignment]  # data is a dict: never hashable


_ALL_FIELDS_SET = set(Envelope.model_fields)  # seq, session_id, run_id, ts, type, data
_new_envelope = Envelope.__new__
_set = object.__setattr__


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """An envelope as our writers put it on the wire: msgspec checks each field's JSON
    type in C while it decodes (strict: no coercion but int -> float for ts)."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    session_id: str
    run_id: str
    ts: float
    type: str
    data: dict[str, Any]


_decode_wire = msgspec.json.Decoder(_Wire).decode


def _canonical(raw: str | bytes) -> Envelope | None:
    """The envelope, if raw is one in the shape our writers produce; else None.

    Canonical: a JSON object with the six fields and no others, `seq` an int >= 1 (within
    64 bits), `session_id`, `run_id` and `type` strings, `ts` a number and `data` an
    object (JSON types checked exactly, no coercion). Such input is valid for pydantic
    too, and gives the same envelope: this only skips pydantic's generic machinery.
    Anything else returns None and goes through pydantic.
    """
    try:
        wire = _decode_wire(raw)
    except msgspec.DecodeError:  # (ValidationError is one) pydantic decides and words it
        return None
    type_ = wire.type
    envelope = _new_envelope(Envelope)
    # What pydantic's validation sets, field by field, in the fields' order.
    _set(
        envelope,
        "__dict__",
        {
            "seq": wire.seq,
            "session_id": wire.session_id,
            "run_id": wire.run_id,
            "ts": wire.ts,
            "type": EVENT_TYPE_OF.get(type_, type_),
            "data": wire.data,
        },
    )
    # One set for all of them: pydantic never changes a frozen model's set (model_copy
    # copies it first), and a set per envelope was a tenth of a replay's decode.
    _set(envelope, "__pydantic_fields_set__", _ALL_FIELDS_SET)
    _set(envelope, "__pydantic_extra__", {})
    _set(envelope, "__pydantic_private__", {"_json": raw})
    return envelope


def envelopes_from_json(raws: Sequence[str | bytes]) -> list[Envelope]:
    """The envelopes of log entries, in order; raises on the first invalid one.

    Run it with the cyclic GC paused where pages are long (runstore/replies.py)."""
    from_json = Envelope.from_json
    return [from_json(raw) for raw in raws]
