"""Request and response bodies of the gateway (what /openapi.json describes)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from gateway.tokens import Scope
from producer.approvals import AnswerOutcome
from producer.cancelling import CancelOutcome
from shared.control import MAX_GRACE_S
from shared.ids import RUN_ID_PATTERN
from shared.jobs import OnBusy, PromptJob

# Scope's values, as a Literal: strict bodies take strings for it, not enum members.
ScopeName = Literal["read", "submit", "cancel", "approve"]

# Request bodies are strict: `"allow": 0` or `"grace_s": false` is an error, not a guess.
_REQUEST = ConfigDict(extra="forbid", strict=True)

ON_BUSY_SCHEMA: dict[str, Any] = {
    "enum": list(get_args(OnBusy)),
    "type": "string",
    "default": "enqueue",
    "description": "The session has a run pending: enqueue behind it, reject (409), "
    "or interrupt it.",
}


def _as_job_schema(schema: dict[str, Any]) -> None:
    """RunCreate's schema: PromptJob's fields (its rules) minus session_id, plus on_busy."""
    job = PromptJob.model_json_schema()
    properties = {k: v for k, v in job["properties"].items() if k != "session_id"}
    schema["properties"] = {**properties, "on_busy": ON_BUSY_SCHEMA}
    schema["required"] = [name for name in job.get("required", []) if name != "session_id"]
    schema["additionalProperties"] = False


class RunCreate(BaseModel):
    """A prompt job without its session id (the path has it), plus what to do when busy.

    Every field is checked by PromptJob itself, all at once (see routes_runs.job_of), so
    one answer names every bad field with the job's own messages.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra=_as_job_schema)

    @property
    def given(self) -> dict[str, Any]:
        """The fields as sent."""
        return dict(self.model_extra or {})


class RunAccepted(BaseModel):
    session_id: str
    run_id: str
    seq: int = Field(description="Seq of the run's `queued` event; stream after seq-1.")


class CancelRequest(BaseModel):
    model_config = _REQUEST

    run_id: str | None = Field(
        default=None, pattern=RUN_ID_PATTERN, description="Default: the session's current run."
    )
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
    model_config = _REQUEST

    allow: bool
    message: str | None = Field(default=None, description="Told to the model (deny reason).")
    updated_input: dict[str, Any] | None = Field(
        default=None, description="Allow with this tool input instead of the one asked for."
    )
    run_id: str | None = Field(
        default=None, pattern=RUN_ID_PATTERN, description="Default: the session's current run."
    )


class AnswerOut(BaseModel):
    outcome: AnswerOutcome
    session_id: str
    run_id: str | None
    request_id: str
    decided_by: str


class TokenCreate(BaseModel):
    model_config = _REQUEST

    scopes: list[ScopeName] = Field(min_length=1, description="What the token may do.")
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


class RunSummaryOut(BaseModel):
    """A session's last run, as its last events tell it."""

    run_id: str
    status: str = Field(
        description="queued or running while it is pending; else its finished status "
        "(succeeded, failed, interrupted, timed_out, lost)."
    )
    finished_at: float | None = Field(default=None, description="Unix seconds.")
    duration_s: float | None = None
    cost_usd: float | None = Field(default=None, description="The run's result total_cost_usd.")
    num_turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


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
    last_run: RunSummaryOut | None = Field(
        default=None,
        description="The pending run, else the last finished one with its duration, cost, "
        "turns and tokens (read from the log's last events; null if they do not show it).",
    )


class SessionDetail(SessionOut):
    open_requests: list[OpenRequestOut] = Field(
        description="Permission requests of the running run that nobody answered yet."
    )
    queue_position: int | None = Field(
        default=None,
        description="While the session's next run is queued: how many jobs wait ahead of it "
        "in the shared queue (0: it is next). Null when no run is queued, or when it waits "
        "elsewhere (its turn in the session, a worker's own queue) or deeper than the first "
        "1000 jobs.",
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
