"""Events: what a run produces, and the envelope every client receives.

Envelope, as JSON on the wire and in the session log:

    {"seq": 7, "session_id": "s1", "run_id": "9f…", "ts": 1764000000.123,
     "type": "message", "data": {...}}

`seq` is per session and increases by exactly one per event, across runs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.blocks import ContentBlock


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    INIT = "init"
    MESSAGE = "message"
    STREAM_EVENT = "stream_event"
    RESULT = "result"
    ERROR = "error"
    TEXT = "text"
    RATE_LIMIT = "rate_limit"
    RETRY = "retry"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


class RunStatus(StrEnum):
    """How a run ended; carried by its one `finished` event."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    BUFFER_OVERFLOW = "buffer_overflow"


TERMINAL_EVENT_TYPES = frozenset({EventType.FINISHED})


class ErrorCode(StrEnum):
    CLI_NOT_FOUND = "cli_not_found"
    CLI_EXIT = "cli_exit"
    CLI_ERROR = "cli_error"
    AUTHENTICATION = "authentication_failed"
    RESULT_ERROR = "result_error"
    LINE_TOO_LONG = "line_too_long"
    EVENT_TOO_LARGE = "event_too_large"
    MISSING_TYPE = "missing_type"
    INVALID_JOB = "invalid_job"
    UNKNOWN_PROFILE = "unknown_profile"
    TIMEOUT = "timeout"
    RESUME_FAILED = "resume_failed"
    TRANSCRIPT_MISSING = "transcript_missing"
    CWD_NOT_FOUND = "cwd_not_found"
    CWD_NOT_ALLOWED = "cwd_not_allowed"
    LOG_BUDGET_EXCEEDED = "log_budget_exceeded"
    CORRUPT_STATE = "corrupt_state"
    LOST = "lost"
    BUFFER_OVERFLOW = "buffer_overflow"
    INTERNAL = "internal"


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueuedData(EventData):
    profile: str
    model: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class StartedData(EventData):
    worker: str
    host: str
    pid: int = Field(description="PID of the CLI process.")


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
    code: ErrorCode
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


class RetryData(EventData):
    """The CLI is retrying a failed model request (it says so before waiting)."""

    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: int | None = None
    error_status: int | None = None
    error: str | None = None


class InterruptedData(EventData):
    reason: str


class FinishedData(EventData):
    status: RunStatus
    exit_code: int | None = None
    duration_s: float
    claude_session_id: str | None = None
    reason: str | None = None
    stderr_tail: str | None = None


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
    EventType.FINISHED: FinishedData,
}


class Event(BaseModel):
    """An event before it is published: no seq yet."""

    model_config = ConfigDict(frozen=True)

    type: EventType
    data: EventData


class Envelope(BaseModel):
    """What every client sees: one published event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    session_id: str
    run_id: str
    ts: float
    type: EventType
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    def typed_data(self) -> EventData:
        """The payload validated into its model (e.g. FinishedData for `finished`)."""
        return DATA_MODELS[self.type].model_validate(self.data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        return cls.model_validate_json(raw)


def envelope_header(session_id: str, run_id: str) -> str:
    """The part of every envelope of a run that never changes (see encode_body)."""
    return f'"session_id":{json.dumps(session_id)},"run_id":{json.dumps(run_id)},'


def encode_body(session_id: str, run_id: str, ts: float, event: Event) -> str:
    """The envelope JSON minus its leading `{"seq":N,` part, which Redis adds.

    The publish script assigns seq atomically and splices it in front of this text.
    """
    return encode_with_header(envelope_header(session_id, run_id), ts, event)


def encode_with_header(header: str, ts: float, event: Event) -> str:
    """encode_body with the run's header computed once (the publisher's hot path)."""
    data_json = event.data.model_dump_json(exclude_none=False)
    return f'{header}"ts":{ts!r},"type":"{event.type.value}","data":{data_json}}}'
