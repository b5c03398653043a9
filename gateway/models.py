"""Request and response bodies of the gateway (what /openapi.json describes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.tokens import Scope
from producer.approvals import AnswerOutcome
from producer.cancelling import CancelOutcome
from shared.control import MAX_GRACE_S
from shared.jobs import OnBusy, PromptJob, ResumePolicy


def _about(name: str) -> str | None:
    """PromptJob's description of a field: the job's rules live there, not here."""
    return PromptJob.model_fields[name].description


class RunCreate(BaseModel):
    """A prompt job without its session id (the path has it), plus what to do when busy.

    The fields are checked by PromptJob itself, so its messages name what is wrong.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The prompt (non-blank, at most 1,000,000 characters).")
    context: dict[str, Any] | None = Field(default=None, description=_about("context"))
    cwd: str | None = Field(default=None, description=_about("cwd"))
    model: str | None = Field(default=None, description="Model name passed to the CLI.")
    profile: str | None = Field(default=None, description=_about("profile"))
    include_partial_messages: bool = False
    max_turns: int | None = Field(default=None, description="Limit of agentic turns (1-1000).")
    timeout_s: float | None = Field(default=None, description="Wall-clock limit of the run.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    new_conversation: bool = Field(default=False, description=_about("new_conversation"))
    resume_policy: ResumePolicy = Field(default="fail", description=_about("resume_policy"))
    webhook: str | None = Field(default=None, description=_about("webhook"))
    on_busy: OnBusy = Field(
        default="enqueue",
        description="The session has a run pending: enqueue behind it, reject (409), "
        "or interrupt it.",
    )


class RunAccepted(BaseModel):
    session_id: str
    run_id: str
    seq: int = Field(description="Seq of the run's `queued` event; stream after seq-1.")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, description="Default: the session's current run.")
    wait: bool = Field(default=False, description="Answer once the owning worker ended the run.")
    grace_s: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_GRACE_S,
        description="Soft cancel: interrupt the turn, kill only after this many seconds.",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="With wait: how long to wait beyond grace_s."
    )


class CancelOut(BaseModel):
    outcome: CancelOutcome
    session_id: str
    run_id: str | None


class PermissionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: bool
    message: str | None = Field(default=None, description="Told to the model (deny reason).")
    updated_input: dict[str, Any] | None = Field(
        default=None, description="Allow with this tool input instead of the one asked for."
    )
    run_id: str | None = Field(default=None, description="Default: the session's current run.")


class AnswerOut(BaseModel):
    outcome: AnswerOutcome
    session_id: str
    run_id: str | None
    request_id: str
    decided_by: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(min_length=1, description="read, submit, cancel, approve.")
    ttl_s: float | None = Field(
        default=None,
        gt=0,
        description="Lifetime in seconds, at most CLAUDE_QUEUE_TOKEN_MAX_TTL_S (its default).",
    )


class TokenOut(BaseModel):
    token: str
    token_id: str = Field(description="Named in decided_by (token:<id>) of its answers.")
    session_id: str
    scopes: list[Scope]
    expires_at: int = Field(description="Unix seconds.")


class OpenRequestOut(BaseModel):
    session_id: str
    run_id: str
    request_id: str
    tool_name: str
    input: dict[str, Any]
    tool_use_id: str | None = None
    description: str | None = None
    suggestions: list[Any] = Field(default_factory=list)
    expires_at: float


class SessionOut(BaseModel):
    session_id: str
    state: str = Field(description="running, queued or idle.")
    pending_runs: list[str] = Field(description="Runs queued or running, oldest first.")
    last_run_id: str | None = None
    claude_session_id: str | None = None
    cwd: str | None = None
    events: int = 0
    last_seq: int = 0
    transcript_bytes: int = 0
    last_activity: float | None = None


class SessionDetail(SessionOut):
    open_requests: list[OpenRequestOut] = Field(
        description="Permission requests of the running run that nobody answered yet."
    )


class SessionList(BaseModel):
    sessions: list[SessionOut]


class SessionDeleted(BaseModel):
    session_id: str
    keys_removed: int


class WorkerOut(BaseModel):
    name: str
    state: str
    current_job: str | None = None
    hostname: str | None = None
    pid: int | None = None
    queues: list[str] = Field(default_factory=list)


class GatewayStats(BaseModel):
    """This gateway process's event streams (each `--workers` process counts its own)."""

    sse_streams_open: int
    sse_clients_dropped: int = Field(description="Streams closed because the client fell behind.")
    sse_buffer_capacity: int = Field(description="Events buffered per client before it is dropped.")
    sse_buffer_high_water: int = Field(description="Most events one client's buffer ever held.")


class StatusOut(BaseModel):
    queue: str
    queued: int
    workers: list[WorkerOut]
    running: dict[str, str] = Field(description="Run id -> session id.")
    gateway: GatewayStats


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: dict[str, str] | None = Field(default=None, description="Field -> what is wrong.")


class ErrorBody(BaseModel):
    error: ErrorDetail
