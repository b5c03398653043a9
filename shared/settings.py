"""The one settings object, read from `CLAUDE_QUEUE_*` environment variables.

Build it once at an entry point (`Settings()`) and pass it down; nothing in
the project reads the environment anywhere else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from shared import settingchecks as checks
from shared.envnames import (
    ENV_PREFIX,
    SettingsError,
    describe_settings_error,
    describe_source_error,
    unknown_names_check,
)
from shared.profiles import DEFAULT_SYSTEM_PROMPT_TEMPLATE, PermissionProfile, default_profiles
from shared.urls import redact_url, sentinel_address

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything configurable, for producers and workers alike."""

    model_config = SettingsConfigDict(
        env_prefix="CLAUDE_QUEUE_", extra="forbid", frozen=True, validate_default=True
    )

    redis_url: SecretStr = Field(
        default=SecretStr("redis://localhost:6379/0"),
        description="Redis connection URL; redis://, rediss:// and passwords are supported.",
    )
    redis_sentinels: tuple[str, ...] = Field(
        default=(),
        description="Redis Sentinel addresses (JSON list of host:port); when set, the master is "
        "found through them (redis_url then gives only db, user, password and TLS).",
    )
    redis_sentinel_master: str = Field(
        default="mymaster",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="The master name the sentinels monitor.",
    )
    redis_sentinel_password: SecretStr = Field(
        default=SecretStr(""), description="Password of the sentinels themselves; empty: none."
    )
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Replicas that must hold a run's events before they count as written (WAIT).",
    )
    redis_replica_wait_ms: int = Field(
        default=1000,
        ge=1,
        le=60_000,
        description="How long one write waits for those replicas before it is retried.",
    )
    redis_max_connections: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Connections one asyncio client (AsyncClient, the gateway) opens at most; "
        "a command that finds them all busy waits for one (up to 20 s).",
    )
    queue_name: str = Field(
        default="claude-queue",
        # No ':': a worker's own queue is `<queue>:worker:<name>` (shared/rqjobs.py),
        # which another deployment's queue name must never look like.
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="RQ queue the jobs go through.",
    )
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
    prompt_preview_chars: int = Field(
        default=2000,
        ge=0,
        le=100_000,
        description="The queued event shows the prompt cut to this many characters (0: none).",
    )
    max_event_bytes: int = Field(
        default=1 * MiB,
        ge=64 * 1024,
        description="Largest encoded event published; longer fields are truncated with a marker.",
    )
    max_run_log_bytes: int = Field(
        default=64 * MiB,
        ge=64 * 1024,
        description="Bytes one run may write to its session log before it is killed.",
    )
    stderr_tail_bytes: int = Field(
        default=16 * 1024, ge=256, description="CLI stderr kept for error reports."
    )
    cli_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        description="Niceness of the CLI and its session's scheduling group; 0: the worker's.",
    )

    default_timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit a run.")
    idle_timeout_s: float = Field(
        default=900.0, gt=0, description="Kill a run that prints nothing for this long."
    )
    result_grace_s: float = Field(
        default=5.0, gt=0, description="How long the CLI may linger after its final result."
    )
    warm_idle_s: float = Field(
        default=120.0,
        ge=0,
        description="Keep a session's CLI alive this long after a run for its next one; 0: off.",
    )
    warm_max: int = Field(default=2, ge=0, description="Warm CLIs one worker keeps at most.")
    spare_horse: bool = Field(
        default=True,
        description="Fork-mode workers fork their next work horse while they wait for a job.",
    )
    horse_runs: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Runs one spare work horse performs before it exits; 1: a new one per run.",
    )
    approval_timeout_s: float = Field(
        default=600.0, gt=0, description="A permission request nobody answers is denied after."
    )

    lease_ttl_s: float = Field(
        default=15.0, gt=0, description="A run's session lease (heartbeat) lifetime."
    )
    lease_renew_s: float = Field(
        default=5.0, gt=0, description="How often a running run renews its lease."
    )
    scheduler: bool = Field(
        default=True,
        description="Run RQ's scheduler in the worker (delayed runs); with none, they wait.",
    )
    concurrency_limits: dict[str, int] = Field(
        default_factory=dict,
        description='JSON object: limit key -> most runs with it at once ("*": all runs).',
    )
    retry_first_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait before a run's first retry (retry_lost, retry_on); doubles.",
    )
    retry_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait before any retry of a run."
    )
    retry_on_max: int = Field(
        default=3, ge=0, le=10, description="Retries of a run after the API errors in retry_on."
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
    cli_env_passthrough: tuple[str, ...] = Field(
        default=(),
        description="Names of worker environment variables passed to the CLI beyond the defaults.",
    )
    cwd_roots: tuple[str, ...] = Field(
        default=(),
        description="Absolute folders a run's cwd must lie under (after resolving); empty: any.",
    )
    default_cwd: str | None = Field(
        default=None,
        description="Where a job without cwd runs; default a per-worker scratch folder.",
    )

    worker_name: str | None = Field(default=None, description="Worker name; default host+pid.")

    cancel_ack_timeout_s: float = Field(
        default=5.0, gt=0, description="How long cancel(wait=True) waits for the owner."
    )

    api_keys: tuple[SecretStr, ...] = Field(
        default=(), description="HTTP gateway API keys (JSON list); each may do everything."
    )
    token_secret: SecretStr | None = Field(
        default=None, description="Signs the gateway's per-session tokens."
    )
    token_max_ttl_s: float = Field(
        default=86400.0, gt=0, description="Longest lifetime a session token may be minted for."
    )
    cors_origins: tuple[str, ...] = Field(
        default=(), description="Origins browsers may call the gateway from (JSON list)."
    )
    sse_heartbeat_s: float = Field(
        default=15.0, gt=0, description="A comment line on idle SSE streams this often."
    )
    sse_client_buffer: int = Field(
        default=1000, ge=1, description="Events queued for one SSE client before it is dropped."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC key of webhook signatures (X-Claude-Queue-Signature)."
    )
    webhook_retry_s: tuple[int, ...] = Field(
        default=(5, 30, 120, 600, 1800, 3600),
        description="Waits before each retry of a failed webhook delivery; its length is "
        "the number of retries.",
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow webhooks to loopback and private addresses."
    )

    archive_dsn: SecretStr = Field(
        default=SecretStr(""),
        description="PostgreSQL URL (postgresql://) of the run archive; empty: no archive.",
    )
    archive_schema: str = Field(
        default="claude_queue",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema holding the archive's tables.",
    )
    archive_retention_days: int = Field(
        default=0, ge=0, description="Archived sessions older than this are pruned; 0: kept."
    )
    archive_claim_idle_s: float = Field(
        default=60.0,
        gt=0,
        description="An outbox entry a drainer holds this long unacknowledged goes to another.",
    )

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        checks.redis_url(value.get_secret_value())
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            sentinel_address(address)
        return value

    @field_validator("concurrency_limits")
    @classmethod
    def _limits(cls, value: dict[str, int]) -> dict[str, int]:
        return checks.limits(value)

    @field_validator("archive_dsn")
    @classmethod
    def _archive_scheme(cls, value: SecretStr) -> SecretStr:
        checks.archive_dsn(value.get_secret_value())
        return value

    @field_validator("cwd_roots")
    @classmethod
    def _roots_absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checks.cwd_roots(value)

    @field_validator("default_cwd")
    @classmethod
    def _default_cwd_absolute(cls, value: str | None) -> str | None:
        if value is not None and not checks.is_absolute(value):
            raise ValueError(f"default_cwd must be an absolute path; got {value!r}")
        return value

    @field_validator("cli_env_passthrough")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checks.passthrough_names(value)

    @model_validator(mode="after")
    def _retry_waits_ordered(self) -> Settings:
        if self.retry_first_s > self.retry_max_s:
            raise ValueError("retry_first_s must be at most retry_max_s")
        return self

    @model_validator(mode="after")
    def _sentinel_needs_tcp(self) -> Settings:
        if self.redis_sentinels and self.redis_url.get_secret_value().startswith("unix://"):
            raise ValueError("redis_sentinels need a redis:// or rediss:// redis_url, not unix://")
        return self

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
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs; empty when Redis is reached directly."""
        return [sentinel_address(address) for address in self.redis_sentinels]

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL with any password replaced, safe to log and print."""
        return redact_url(self.redis_url.get_secret_value())

    @property
    def archive_enabled(self) -> bool:
        """True when an archive DSN is set."""
        return bool(self.archive_dsn.get_secret_value())

    @property
    def archive_dsn_redacted(self) -> str:
        """The archive DSN with any password replaced, safe to log and print."""
        return redact_url(self.archive_dsn.get_secret_value())

    @property
    def scope(self) -> str:
        """Identifies this deployment (Redis database + key prefix) on a host."""
        parts = urlsplit(self.redis_url.get_secret_value())
        server = f"{parts.hostname}:{parts.port}"
        if self.redis_sentinels:  # the master moves; its name and its sentinels do not
            # The sentinels too, not only the master's name: two deployments on one host
            # may both call theirs `mymaster` (the default), and a worker sweeps up the
            # processes of its scope (four such test clusters killed each other's CLIs).
            sentinels = ",".join(sorted(self.redis_sentinels))
            server = f"sentinel:{sentinels}/{self.redis_sentinel_master}"
        where = f"{server}{parts.path}/{self.key_prefix}"
        return hashlib.sha256(where.encode()).hexdigest()[:16]

    @property
    def redis_db(self) -> int:
        """The database number the Redis URL selects (0 when it names none)."""
        path = urlsplit(self.redis_url.get_secret_value()).path.strip("/")
        return int(path) if path.isdigit() else 0

    @classmethod
    def from_environment(cls) -> Settings:
        """Settings from CLAUDE_QUEUE_* variables; raises SettingsError naming what is wrong.

        An unknown CLAUDE_QUEUE_* name is an error (with the closest known name), so a
        typo such as CLAUDE_QUEUE_REDIS_URLL never silently falls back to a default.
        """
        check_environment_names(os.environ)
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(describe_settings_error(exc)) from None
        except SourceError as exc:  # a list or object setting whose value is not JSON
            raise SettingsError(describe_source_error(exc)) from None


def known_environment_names() -> list[str]:
    """Every CLAUDE_QUEUE_* variable a Settings field reads."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def check_environment_names(environ: Mapping[str, str]) -> None:
    """Raise SettingsError for a CLAUDE_QUEUE_* variable no setting reads."""
    unknown_names_check(environ, known_environment_names())
