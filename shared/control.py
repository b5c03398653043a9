"""Control messages sent by producers to the worker that owns a run.

Both kinds travel on the run's control channel (keys.control). A worker acts only on
a message naming the run it owns; an answer is also checked against the decision the
RunStore recorded (only the first answer to a request is ever recorded).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.ids import REQUEST_ID_PATTERN

# Bounds on what a caller may put into a control message (they reach the CLI's stdin).
MAX_MESSAGE_CHARS = 2000
MAX_DECIDED_BY_CHARS = 200
MAX_GRACE_S = 3600.0


class CancelRequest(BaseModel):
    """Ask the owner of `run_id` to stop the run.

    With `grace_s` > 0 the owner first asks the CLI to end its turn (a soft interrupt)
    and kills the process tree only if the turn has not ended within `grace_s`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cancel"] = "cancel"
    session_id: str
    run_id: str
    reason: str = Field(default="cancelled by request", max_length=500)
    # When given, the owner acts only if its recorded CLI pid is this one.
    pid: int | None = None
    grace_s: float = Field(default=0.0, ge=0.0, le=MAX_GRACE_S)


class PermissionAnswer(BaseModel):
    """A person's answer to one permission request of a running run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["answer"] = "answer"
    session_id: str
    run_id: str
    request_id: Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]
    behavior: Literal["allow", "deny"]
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    updated_input: dict[str, Any] | None = None
    decided_by: str | None = Field(default=None, max_length=MAX_DECIDED_BY_CHARS)


ControlMessage = Annotated[CancelRequest | PermissionAnswer, Field(discriminator="kind")]
CONTROL_MESSAGE: TypeAdapter[CancelRequest | PermissionAnswer] = TypeAdapter(ControlMessage)
