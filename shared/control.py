"""Control messages sent by producers to the worker that owns a run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CancelRequest(BaseModel):
    """Ask the owner of `run_id` to kill the process tree it started for that run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cancel"] = "cancel"
    session_id: str
    run_id: str
    reason: str = Field(default="cancelled by request", max_length=500)
    # When given, the owner acts only if its recorded CLI pid is this one.
    pid: int | None = None
