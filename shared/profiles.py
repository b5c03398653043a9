"""Permission profiles: what a job may let the CLI do. Jobs name a profile, never raw
flags; the worker's settings hold the profiles it knows (shared/settings.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions", "dontAsk"]

DEFAULT_SYSTEM_PROMPT_TEMPLATE = (
    "You are running unattended on a claude-queue worker ({worker}) for session {session_id}, "
    "run {run_id}. Nobody can answer questions mid-run, so finish the task or explain clearly "
    "what blocked you."
)


class PermissionProfile(BaseModel):
    """What a job may let the CLI do; jobs name a profile, never raw flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    permission_mode: PermissionMode = "default"
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    # "ask": a tool the profile does not allow becomes a permission request that a
    # person answers through the queue; "never": the CLI refuses it.
    approval: Literal["never", "ask"] = "never"


def default_profiles() -> dict[str, PermissionProfile]:
    """Profiles every worker knows unless settings replace them."""
    return {
        "readonly": PermissionProfile(allowed_tools=("Read", "Glob", "Grep")),
        "ask": PermissionProfile(allowed_tools=("Read", "Glob", "Grep"), approval="ask"),
        "edit": PermissionProfile(
            permission_mode="acceptEdits", allowed_tools=("Read", "Glob", "Grep", "Edit", "Write")
        ),
        "bash": PermissionProfile(
            permission_mode="acceptEdits",
            allowed_tools=("Bash", "Read", "Glob", "Grep", "Edit", "Write"),
        ),
    }
