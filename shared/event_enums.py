"""The enumerations of events, and their "open" forms for readers.

Writers may only use known members; a reader keeps a newer worker's unknown value as
a plain string (see shared/events.py, forward compatibility).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo


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
    PERMISSION_REQUEST = "permission_request"
    PERMISSION_DECISION = "permission_decision"
    WAITING = "waiting"
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
# A type read from the wire as its member, where it is one (a newer worker's stays a str).
EVENT_TYPE_OF: dict[str, EventType] = {member.value: member for member in EventType}


class DecisionReason(StrEnum):
    """Why a permission request was decided."""

    ANSWERED = "answered"  # a person answered it (respond / approve / deny)
    TIMED_OUT = "timed_out"  # nobody answered within approval_timeout_s: denied
    RUN_ENDED = "run_ended"  # the run ended first: the CLI never got an answer


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


READING = "claude_queue_reading"  # the validation context key of readers


def is_reading(info: ValidationInfo) -> bool:
    """Whether this validation is a reader's (EventData.validate_read), not a writer's."""
    return isinstance(info.context, dict) and info.context.get(READING) is True


def _known_unless_reading(enum_type: type[StrEnum]) -> AfterValidator:
    """Writers may only use members of enum_type; readers keep a newer worker's value as str."""

    def check(value: object, info: ValidationInfo) -> object:
        if isinstance(value, enum_type) or is_reading(info):
            return value
        raise ValueError(f"{value!r} is not a known {enum_type.__name__}")

    return AfterValidator(check)


# `left_to_right`: a known value becomes the enum member, only an unknown one stays a str.
OpenRunStatus = Annotated[
    RunStatus | str, Field(union_mode="left_to_right"), _known_unless_reading(RunStatus)
]
OpenDecisionReason = Annotated[
    DecisionReason | str,
    Field(union_mode="left_to_right"),
    _known_unless_reading(DecisionReason),
]
OpenErrorCode = Annotated[
    ErrorCode | str, Field(union_mode="left_to_right"), _known_unless_reading(ErrorCode)
]


class ColdReason(StrEnum):
    """Why a run started a new CLI although a warm one of its session existed."""

    MISMATCH = "mismatch"  # the warm CLI was started with other flags, cwd or binary
    BUSY = "busy"  # the worker holding it was busy, so another worker took the run
    EXPIRED = "expired"  # it was closed after WARM_IDLE_S (or to make room)
    MOVED = "moved"  # the session moved on since (another worker ran it, or it restarted)


OpenColdReason = Annotated[
    ColdReason | str, Field(union_mode="left_to_right"), _known_unless_reading(ColdReason)
]
