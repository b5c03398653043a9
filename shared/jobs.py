"""Job payloads: what a producer submits and what travels through the RQ queue."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The RQ job function, by import path: producers never import worker code.
JOB_FUNCTION = "worker.job.run_prompt"
# The RQ job function that POSTs a finished run's webhook (worker/webhooks.py).
WEBHOOK_FUNCTION = "worker.webhooks.deliver"

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\[\]-]{0,127}$"
MAX_PROMPT_CHARS = 1_000_000
MAX_CONTEXT_BYTES = 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_WEBHOOK_CHARS = 2048


ResumePolicy = Literal["fail", "start_fresh"]
OnBusy = Literal["enqueue", "reject", "interrupt"]
# Served in this order by every worker (shared/scheduling.py maps them to RQ queues).
Priority = Literal["high", "default", "low"]
# API errors a run may be retried after (retry_on), once the CLI's own retries gave up.
RetryableError = Literal["overloaded", "rate_limited"]
LIMIT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
MAX_DELAY_S = 366 * 24 * 3600.0
MAX_RETRIES = 10


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


class PromptJob(BaseModel):
    """One prompt for one session: what `Client.submit` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="Letters, digits, _ . -")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    context: dict[str, Any] | None = Field(
        default=None, description="JSON object prepended to the prompt as a <context> block."
    )
    cwd: str | None = Field(default=None, description="Absolute working directory for the CLI.")
    model: str | None = Field(default=None, pattern=MODEL_PATTERN)
    profile: str | None = Field(
        default=None, pattern=PROFILE_PATTERN, description="Permission profile name."
    )
    include_partial_messages: bool = False
    max_turns: int | None = Field(default=None, ge=1, le=1000)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    metadata: dict[str, Any] = Field(default_factory=dict)
    new_conversation: bool = Field(
        default=False, description="Start a fresh conversation instead of resuming the session's."
    )
    resume_policy: ResumePolicy = Field(
        default="fail", description="When the conversation cannot be resumed: fail or start_fresh."
    )
    webhook: str | None = Field(
        default=None,
        max_length=MAX_WEBHOOK_CHARS,
        description="https:// (or http://) URL that gets one signed POST when the run finishes.",
    )
    priority: Priority = Field(
        default="default", description="high, default or low; never ahead of the session's order."
    )
    run_at: datetime | None = Field(
        default=None, description="Start no earlier than this time (timezone-aware)."
    )
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, description="Start no earlier than this many s."
    )
    limit_key: str | None = Field(
        default=None,
        pattern=LIMIT_KEY_PATTERN,
        description="Concurrency-limit key (CLAUDE_QUEUE_CONCURRENCY_LIMITS), e.g. a tenant.",
    )
    retry_lost: int = Field(
        default=0, ge=0, le=MAX_RETRIES, description="Submit again this many times if lost."
    )
    retry_on: tuple[RetryableError, ...] = Field(
        default=(), description="API errors (overloaded, rate_limited) that submit it again."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain something other than whitespace")
        if "\x00" in value:
            raise ValueError("prompt must not contain NUL characters")
        return value

    @field_validator("prompt", "context", "metadata", "cwd", "model")
    @classmethod
    def _utf8_encodable(cls, value: Any) -> Any:
        # Lone surrogates survive JSON decoding but cannot be sent to the CLI.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"must be valid Unicode text ({exc.reason})") from None
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd_absolute(cls, value: str | None) -> str | None:
        if value is not None and (not os.path.isabs(value) or "\x00" in value):
            raise ValueError("cwd must be an absolute path")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        # Only the form here; where it points (no private or loopback targets) is
        # checked where it is delivered, after name resolution (worker/webhooks).
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("webhook must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("webhook must not carry credentials in the URL")
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise ValueError("webhook must not contain whitespace or control characters")
        return value

    @field_validator("run_at")
    @classmethod
    def _run_at_aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("run_at must carry a timezone (e.g. 2030-01-01T09:00:00+00:00)")
        if value.timestamp() > datetime.now(UTC).timestamp() + MAX_DELAY_S:
            raise ValueError("run_at must be within a year from now")
        return value.astimezone(UTC)

    @field_validator("retry_on")
    @classmethod
    def _retry_on_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _one_start_time(self) -> PromptJob:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("pass run_at or delay_s, not both")
        return self

    def start_at(self, now: float) -> float | None:
        """When the run may start (epoch seconds), or None for at once."""
        if self.run_at is not None:
            return self.run_at.timestamp()
        if self.delay_s is not None and self.delay_s > 0:
            return now + self.delay_s
        return None

    @field_validator("context")
    @classmethod
    def _context_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and _json_size(value) > MAX_CONTEXT_BYTES:
            raise ValueError(f"context is larger than {MAX_CONTEXT_BYTES} bytes as JSON")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _json_size(value) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
        return value


def new_run_id() -> str:
    """A fresh, unique run id."""
    return uuid.uuid4().hex


class RunRequest(BaseModel):
    """The RQ job payload: a validated PromptJob plus the run it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=1, ge=1, le=1)
    run_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    submitted_at: float
    job: PromptJob
    # Not before this epoch second (a delayed run, or one held behind its session's).
    scheduled_for: float | None = None
    # The run this one submits again (retry_lost / retry_on), and its attempt (1 = first retry).
    retry_of: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    attempt: int = Field(default=0, ge=0, le=MAX_RETRIES)


def describe_validation_error(
    exc: Exception, *, name: Callable[[list[str]], str] | None = None
) -> str:
    """One line per invalid field, naming it: `prompt: String should have at least 1 character`.

    `name` turns a field's location into the name the user knows (e.g. a variable).
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for error in errors():
        loc = [str(part) for part in error.get("loc", ())]
        field_path = name(loc) if name else (".".join(loc) or "(job)")
        lines.append(f"{field_path}: {error.get('msg', 'invalid')}")
    return "; ".join(lines)
