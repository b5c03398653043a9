"""The one settings object, read from `CLAUDE_QUEUE_*` environment variables.

Build it once at an entry point (`Settings()`) and pass it down; nothing in
the project reads the environment anywhere else.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024

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


def default_profiles() -> dict[str, PermissionProfile]:
    """Profiles every worker knows unless settings replace them."""
    return {
        "readonly": PermissionProfile(allowed_tools=("Read", "Glob", "Grep")),
        "edit": PermissionProfile(
            permission_mode="acceptEdits", allowed_tools=("Read", "Glob", "Grep", "Edit", "Write")
        ),
        "bash": PermissionProfile(
            permission_mode="acceptEdits",
            allowed_tools=("Bash", "Read", "Glob", "Grep", "Edit", "Write"),
        ),
    }


class Settings(BaseSettings):
    """Everything configurable, for producers and workers alike."""

    model_config = SettingsConfigDict(
        env_prefix="CLAUDE_QUEUE_", extra="forbid", frozen=True, validate_default=True
    )

    redis_url: SecretStr = Field(
        default=SecretStr("redis://localhost:6379/0"),
        description="Redis connection URL; redis://, rediss:// and passwords are supported.",
    )
    queue_name: str = Field(default="claude-queue", description="RQ queue the jobs go through.")
    key_prefix: str = Field(
        default="cq", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Prefix of every Redis key."
    )
    claude_bin: str = Field(default="claude", description="Claude Code CLI executable.")

    event_log_maxlen: int = Field(default=100_000, ge=100, description="Events kept per session.")
    event_log_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="Session lifetime after its last event."
    )
    max_line_bytes: int = Field(
        default=16 * MiB, ge=64 * 1024, description="Longest CLI output line accepted."
    )
    max_event_bytes: int = Field(
        default=16 * MiB, ge=64 * 1024, description="Largest encoded event published."
    )
    stderr_tail_bytes: int = Field(
        default=16 * 1024, ge=256, description="CLI stderr kept for error reports."
    )

    default_timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit a run.")
    idle_timeout_s: float = Field(
        default=900.0, gt=0, description="Kill a run that prints nothing for this long."
    )
    result_grace_s: float = Field(
        default=5.0, gt=0, description="How long the CLI may linger after its final result."
    )

    lease_ttl_s: float = Field(
        default=15.0, gt=0, description="A run's session lease (heartbeat) lifetime."
    )
    lease_renew_s: float = Field(
        default=5.0, gt=0, description="How often a running run renews its lease."
    )
    reaper_interval_s: float = Field(
        default=5.0, gt=0, description="How often a worker looks for runs whose owner died."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="After a SIGTERM, how long a running run may finish."
    )
    publish_buffer_bytes: int = Field(
        default=64 * MiB, ge=1024, description="Events held in memory while Redis is away."
    )
    transcript_max_bytes: int = Field(
        default=8 * MiB, ge=1024, description="Largest compressed transcript kept in Redis."
    )

    profiles: dict[str, PermissionProfile] = Field(default_factory=default_profiles)
    default_profile: str = "readonly"
    system_prompt_template: str = DEFAULT_SYSTEM_PROMPT_TEMPLATE
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the CLI (e.g. tracking URIs)."
    )

    worker_name: str | None = Field(default=None, description="Worker name; default host+pid.")

    cancel_ack_timeout_s: float = Field(
        default=5.0, gt=0, description="How long cancel(wait=True) waits for the owner."
    )

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _lease_renewed_in_time(self) -> Settings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_renew_s must be at most half of lease_ttl_s")
        return self

    @model_validator(mode="after")
    def _default_profile_exists(self) -> Settings:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles "
                f"{sorted(self.profiles)}"
            )
        return self

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL with any password replaced, safe to log and print."""
        return redact_url(self.redis_url.get_secret_value())

    @property
    def scope(self) -> str:
        """Identifies this deployment (Redis database + key prefix) on a host."""
        parts = urlsplit(self.redis_url.get_secret_value())
        where = f"{parts.hostname}:{parts.port}{parts.path}/{self.key_prefix}"
        return hashlib.sha256(where.encode()).hexdigest()[:16]

    def hostname(self) -> str:
        """This host's name, as recorded on runs and workers."""
        return socket.gethostname()


def redact_url(url: str) -> str:
    """Hide the password part of a URL, even one with unescaped `/ ? #` in it.

    Everything between `://` and the last `@` is taken as user info, so an
    ambiguous URL is over-redacted rather than leaked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{hostpart}"
