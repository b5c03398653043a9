"""`claude-queue doctor`: is this deployment healthy? Each check: name, status, one-line fix.

The judges (`judge_*`) are pure: they take what was read and return a Check. The
shell (`run_checks`) reads Redis, runs the CLI, and feeds them. `start_problem` is
the cheap subset a worker runs before it starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis

from shared.connection import sync_redis
from shared.settings import Settings

# The CLI version the test suite runs against (devtools/claude-cli/package.json).
TESTED_CLI_VERSION = "2.1.330"
MIN_REDIS_MAJOR = 7
REDIS_TIMEOUT_S = 3.0
VERSION_TIMEOUT_S = 15.0
AUTH_TIMEOUT_S = 60.0
SKEW_WARN_S = 1.0
SKEW_FAIL_S = 10.0
# RQ's default worker TTL: a heartbeat older than this means the worker is gone.
HEARTBEAT_STALE_S = 420.0
_OUTPUT_LIMIT = 64 * 1024
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_TOOL = re.compile(r"^(mcp__[A-Za-z0-9_-]+|[A-Za-z][A-Za-z0-9_]*)(\(.+\))?$")
AUTH_PROMPT = "Reply with the single word: ok"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["status"] = self.status.value
        return shown


@dataclass(frozen=True, slots=True)
class Report:
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [check.as_dict() for check in self.checks]}


# -- judges (pure) ---------------------------------------------------------------------


def judge_redis(version: str | None, error: str | None) -> Check:
    if error is not None or version is None:
        return Check(
            "redis",
            Status.FAIL,
            f"Redis did not answer: {error}",
            "start Redis, or point CLAUDE_QUEUE_REDIS_URL at it",
        )
    match = _VERSION.match(version)
    if match is None or int(match.group(1)) < MIN_REDIS_MAJOR:
        return Check(
            "redis",
            Status.WARN,
            f"Redis {version} answers; claude-queue is tested with Redis {MIN_REDIS_MAJOR}+",
            f"upgrade Redis to {MIN_REDIS_MAJOR} or later",
        )
    return Check("redis", Status.OK, f"Redis {version} answers")


def judge_appendonly(aof_enabled: str | None) -> Check:
    if aof_enabled == "1":
        return Check("appendonly", Status.OK, "append-only file on")
    return Check(
        "appendonly",
        Status.WARN,
        "append-only file off: a Redis restart loses events written since the last snapshot"
        if aof_enabled == "0"
        else "could not read whether the append-only file is on",
        "CONFIG SET appendonly yes (and appendonly yes in redis.conf)",
    )


def judge_eviction(policy: str | None) -> Check:
    if policy == "noeviction":
        return Check("maxmemory-policy", Status.OK, "noeviction")
    return Check(
        "maxmemory-policy",
        Status.FAIL,
        f"maxmemory-policy is {policy or 'unknown'}: Redis may evict keys, silently losing runs",
        "CONFIG SET maxmemory-policy noeviction (and in redis.conf)",
    )


def judge_replicas(connected: int | None, wanted: int, *, sentinels: bool) -> Check | None:
    """Replicas the master has, against CLAUDE_QUEUE_REDIS_MIN_REPLICAS; None: not asked."""
    if wanted == 0 and not sentinels:
        return None
    have = "unknown" if connected is None else str(connected)
    if connected is None or connected < wanted:
        return Check(
            "replicas",
            Status.FAIL,
            f"{have} replicas connected, {wanted} required: every event write waits for "
            "them and runs stall",
            "start or repair the replicas, or lower CLAUDE_QUEUE_REDIS_MIN_REPLICAS",
        )
    if connected == 0:
        return Check(
            "replicas",
            Status.WARN,
            "no replica connected: a failover has nothing to promote",
            "start a replica of the master (replicaof) that the sentinels can see",
        )
    return Check("replicas", Status.OK, f"{connected} connected, {wanted} required per write")


def judge_cli(path: str | None, name: str, output: str | None, error: str | None) -> Check:
    fix = "install the Claude CLI, or point CLAUDE_QUEUE_CLAUDE_BIN at it"
    if path is None:
        return Check("cli", Status.FAIL, f"the Claude CLI {name!r} was not found", fix)
    if error is not None or output is None:
        return Check("cli", Status.FAIL, f"{path} does not run: {error}", fix)
    match = _VERSION.search(output)
    if match is None:
        return Check(
            "cli",
            Status.WARN,
            f"{path} runs but printed no version",
            f"use Claude CLI {TESTED_CLI_VERSION}",
        )
    found = match.group(0)
    if found != TESTED_CLI_VERSION:
        return Check(
            "cli",
            Status.WARN,
            f"{path}: version {found}; claude-queue is tested with {TESTED_CLI_VERSION}",
            f"npm install -g @anthropic-ai/claude-code@{TESTED_CLI_VERSION}",
        )
    return Check("cli", Status.OK, f"{path}: version {found}")


def judge_auth(result: Mapping[str, Any] | None, error: str | None) -> Check:
    fix = "log the CLI in (claude /login) or set ANTHROPIC_API_KEY for the worker"
    if result is None:
        return Check("cli-auth", Status.FAIL, f"a one-turn prompt failed: {error}", fix)
    if result.get("is_error") is True:
        said = str(result.get("result") or result.get("subtype") or "an error result")[:200]
        return Check("cli-auth", Status.FAIL, f"a one-turn prompt failed: {said}", fix)
    return Check("cli-auth", Status.OK, "a one-turn prompt succeeded")


def judge_workers(heartbeats: Mapping[str, float | None], now: float) -> Check:
    fix = "start one: claude-queue worker"
    if not heartbeats:
        return Check("workers", Status.FAIL, "no worker listens on the queue", fix)
    ages = {
        name: None if beat is None else max(0.0, now - beat) for name, beat in heartbeats.items()
    }
    fresh = {name: age for name, age in ages.items() if age is not None and age < HEARTBEAT_STALE_S}
    shown = ", ".join(
        f"{name} ({'?' if age is None else f'{age:.0f}s ago'})"
        for name, age in sorted(ages.items())
    )
    if not fresh:
        return Check("workers", Status.FAIL, f"no recent heartbeat: {shown}", fix)
    if len(fresh) < len(ages):
        return Check(
            "workers",
            Status.WARN,
            f"{len(fresh)} of {len(ages)} alive; last heartbeats: {shown}",
            "stale workers are removed by RQ once their key expires; check their hosts",
        )
    return Check("workers", Status.OK, f"{len(fresh)} alive; last heartbeats: {shown}")


def judge_clock(skew_s: float) -> Check:
    detail = f"this host's clock is {skew_s:+.3f}s from Redis's"
    if abs(skew_s) >= SKEW_FAIL_S:
        return Check("clock-skew", Status.FAIL, detail, "run NTP (chrony, systemd-timesyncd)")
    if abs(skew_s) >= SKEW_WARN_S:
        return Check("clock-skew", Status.WARN, detail, "run NTP (chrony, systemd-timesyncd)")
    return Check("clock-skew", Status.OK, detail)


def judge_profiles(settings: Settings) -> Check:
    problems: list[str] = []
    warnings: list[str] = []
    for name, profile in sorted(settings.profiles.items()):
        for tool in (*profile.allowed_tools, *profile.disallowed_tools):
            if not _TOOL.match(tool):
                problems.append(f"{name}: {tool!r} is not a tool name")
        both = set(profile.allowed_tools) & set(profile.disallowed_tools)
        if both:
            warnings.append(f"{name}: {', '.join(sorted(both))} both allowed and disallowed")
        if profile.permission_mode == "bypassPermissions":
            warnings.append(f"{name}: bypassPermissions lets the CLI do anything")
    fix = "correct CLAUDE_QUEUE_PROFILES (a JSON object of profiles)"
    if problems:
        return Check("profiles", Status.FAIL, "; ".join(problems), fix)
    if warnings:
        return Check("profiles", Status.WARN, "; ".join(warnings), fix)
    return Check(
        "profiles",
        Status.OK,
        f"{len(settings.profiles)} valid: " + ", ".join(sorted(settings.profiles)),
    )


# -- the shell (I/O) -------------------------------------------------------------------


def cli_path(settings: Settings) -> str | None:
    """Where the worker would find the CLI (on the PATH the CLI is started with)."""
    from worker.cli_env import cli_environment

    env = cli_environment(settings, os.environ)
    return shutil.which(settings.claude_bin, path=env.get("PATH"))


def start_problem(settings: Settings) -> str | None:
    """Why a worker must not start (the CLI cannot be found), or None."""
    if cli_path(settings) is None:
        return (
            f"the Claude CLI {settings.claude_bin!r} was not found: install it or point "
            "CLAUDE_QUEUE_CLAUDE_BIN at it (claude-queue doctor checks the rest)"
        )
    return None


def _run(argv: list[str], *, stdin: str, timeout_s: float, env: Mapping[str, str]) -> str:
    """Run without a shell; stdout, bounded. Raises OSError, TimeoutExpired or RuntimeError."""
    done = subprocess.run(
        argv,
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout_s,
        env=dict(env),
        check=False,
    )
    out = done.stdout[:_OUTPUT_LIMIT].decode(errors="replace")
    if done.returncode != 0 and not out.strip():
        err = done.stderr[-_OUTPUT_LIMIT:].decode(errors="replace").strip()
        raise RuntimeError(f"exit code {done.returncode}: {err[-300:] or 'no output'}")
    return out


def check_cli(settings: Settings, env: Mapping[str, str]) -> tuple[Check, str | None]:
    path = cli_path(settings)
    if path is None:
        return judge_cli(None, settings.claude_bin, None, None), None
    try:
        output = _run([path, "--version"], stdin="", timeout_s=VERSION_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired, RuntimeError) as exc:
        return judge_cli(path, settings.claude_bin, None, str(exc)), None
    return judge_cli(path, settings.claude_bin, output, None), path


def check_auth(path: str, env: Mapping[str, str]) -> Check:
    argv = [path, "-p", "--output-format", "stream-json", "--verbose", "--max-turns", "1"]
    try:
        output = _run(argv, stdin=AUTH_PROMPT, timeout_s=AUTH_TIMEOUT_S, env=env)
    except (OSError, RuntimeError) as exc:
        return judge_auth(None, str(exc))
    except subprocess.TimeoutExpired:
        return judge_auth(None, f"no answer within {AUTH_TIMEOUT_S:.0f}s")
    return judge_auth(*_last_result(output.splitlines()))


def _last_result(lines: Iterable[str]) -> tuple[dict[str, Any] | None, str | None]:
    result: dict[str, Any] | None = None
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("type") == "result":
            result = value
    return result, None if result is not None else "the CLI printed no result"


def check_redis(settings: Settings, now: float) -> list[Check]:
    connection = sync_redis(settings, timeout_s=REDIS_TIMEOUT_S)
    with connection:
        try:
            info: dict[str, Any] = connection.info()
        except (redis.RedisError, OSError) as exc:
            return [judge_redis(None, str(exc) or type(exc).__name__)]
        checks = [
            judge_redis(str(info.get("redis_version")), None),
            judge_appendonly(_text(info.get("aof_enabled"))),
            judge_eviction(_text(info.get("maxmemory_policy"))),
        ]
        replicas = judge_replicas(
            _count(info.get("connected_slaves")),
            settings.redis_min_replicas,
            sentinels=bool(settings.redis_sentinels),
        )
        if replicas is not None:
            checks.append(replicas)
        try:
            seconds, micros = connection.time()
            checks.append(judge_clock(now - (seconds + micros / 1e6)))
            beats = _heartbeats(connection, settings.queue_name)
        except (redis.RedisError, OSError) as exc:
            return [*checks, Check("workers", Status.FAIL, f"cannot read workers: {exc}", None)]
    checks.append(judge_workers(beats, now))
    return checks


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _heartbeats(connection: redis.Redis, queue_name: str) -> dict[str, float | None]:
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    return {w.name: _epoch(w.last_heartbeat) for w in Worker.all(queue=queue)}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _epoch(value: object) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def run_checks(settings: Settings, *, offline: bool) -> Report:
    """Every check; the CLI prompt only when not `offline`."""
    from worker.cli_env import cli_environment

    env = cli_environment(settings, os.environ)
    checks = check_redis(settings, time.time())
    cli, path = check_cli(settings, env)
    checks.append(cli)
    if not offline and path is not None:
        checks.append(check_auth(path, env))
    checks.append(judge_profiles(settings))
    return Report(checks)
