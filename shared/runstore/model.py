"""What RunStore operations take and return: run states, conditions, results. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.control import MAX_DECIDED_BY_CHARS, MAX_MESSAGE_CHARS
from shared.events import DecisionReason, Event, PermissionRequestData
from shared.jobs import RunRequest


class RunState(StrEnum):
    """Where a run record is: queued -> running -> finished (finished carries final_status)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class Condition(StrEnum):
    """When the reaper may end a run from outside its runner."""

    LEASE_GONE = "lease_gone"  # a running run whose session lease expired
    WAIT_GONE = "wait_gone"  # a queued run whose waiting worker stopped renewing its marker


@dataclass(frozen=True, slots=True)
class OwnedBy:
    """force_finish condition: the run is still running under this worker (its horse died)."""

    worker_name: str


FinishCondition = Condition | OwnedBy


@dataclass(frozen=True, slots=True)
class Claimed:
    """The run is ours: publish with this fencing token."""

    token: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """Not our turn yet: `head` (the run ahead, if any) must finish first."""

    head: str | None


@dataclass(frozen=True, slots=True)
class Skip:
    """This delivery must not run: the run is already running (a duplicate) or finished."""

    state: RunState


ClaimResult = Claimed | Waiting | Skip


class CancelOutcome(StrEnum):
    CANCELLED_RUNNING = "cancelled_running"
    CANCELLED_QUEUED = "cancelled_queued"
    ALREADY_FINISHED = "already_finished"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    OWNER_UNREACHABLE = "owner_unreachable"  # only cancel(wait=True) says this, never the store


class AnswerOutcome(StrEnum):
    """What became of an answer to a permission request."""

    DELIVERED = "delivered"  # recorded as the decision and sent to the run's owner
    ALREADY_DECIDED = "already_decided"  # an earlier answer (or the timeout) decided it
    UNKNOWN_REQUEST = "unknown_request"  # the running run has no such request
    RUN_NOT_RUNNING = "run_not_running"  # the session has no running run (it ended)


class Decision(BaseModel):
    """The one recorded decision of a permission request (stored as JSON, set once)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    behavior: Literal["allow", "deny"]
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    updated_input: dict[str, Any] | None = None
    decided_by: str | None = Field(default=None, max_length=MAX_DECIDED_BY_CHARS)
    reason: DecisionReason = DecisionReason.ANSWERED


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """A permission request of a running run that nobody has decided yet."""

    session_id: str
    run_id: str
    request: PermissionRequestData

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "run_id": self.run_id,
            **self.request.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: refused (fenced off), or written up to `last_seq`."""

    accepted: bool
    last_seq: int = 0  # 0: nothing new was written (a retry of bodies already logged)


@dataclass(frozen=True, slots=True)
class Submitted:
    queued_seq: int


@dataclass(frozen=True, slots=True)
class Deleted:
    keys_removed: int


@dataclass(frozen=True, slots=True)
class Busy:
    """Refused: the session has a run queued or running."""


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to submit: its RQ job payload, its `queued` event and RQ's limits."""

    request: RunRequest
    queued: Event
    rq_timeout_s: int
    result_ttl_s: int

    @property
    def session_id(self) -> str:
        return self.request.job.session_id

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.request.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The fields of a run record the store's callers read."""

    state: RunState | None  # None: no record, or a state this code does not know
    final_status: str | None = None
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class HeldRun:
    """A run a worker holds: running it, or (`waiting`) holding it until its turn."""

    session_id: str
    run_id: str
    waiting: bool


class SessionState(StrEnum):
    RUNNING = "running"
    QUEUED = "queued"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    state: SessionState
    pending_runs: list[str] = field(default_factory=list)
    last_run_id: str | None = None
    claude_session_id: str | None = None
    cwd: str | None = None
    events: int = 0
    last_seq: int = 0
    transcript_bytes: int = 0
    last_activity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
