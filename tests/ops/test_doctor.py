"""`claude-queue doctor`: each check failing on purpose against real parts, and the judges."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from producer.client import Client
from producer.doctor import (
    TESTED_CLI_VERSION,
    Status,
    judge_auth,
    judge_cli,
    judge_clock,
    judge_eviction,
    judge_profiles,
    judge_replicas,
    judge_workers,
)
from shared.profiles import PermissionProfile
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.ops.support import worker_argv
from tests.redis_server import RedisServer

TIMEOUT_S = 120.0


def doctor_argv(*args: str) -> list[str]:
    """`claude-queue doctor ARGS`: through the CLI group once it registers the command."""
    from producer.cli import main

    if "doctor" in main.commands:
        return [sys.executable, "-m", "producer", "doctor", *args]
    code = "from producer.cli_doctor import doctor; doctor(prog_name='claude-queue doctor')"
    return [sys.executable, "-c", code, *args]


def run_doctor(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        doctor_argv("--json", *args),
        cwd=REPO,
        env=worker_env(settings),
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    report = json.loads(done.stdout)
    return done.returncode, report


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


# -- against real parts ----------------------------------------------------------------


def test_json_shape_and_no_worker(settings: Settings) -> None:
    code, report = run_doctor(settings, "--offline")
    assert code == 1 and report["healthy"] is False
    names = [check["name"] for check in report["checks"]]
    assert names == [
        "redis", "appendonly", "maxmemory-policy", "clock-skew", "workers", "cli", "profiles"
    ]  # fmt: skip
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in {"ok", "warn", "fail"}
        assert check["status"] == "ok" or check["fix"]
    found = checks(report)
    assert found["redis"]["status"] == "ok"
    assert found["maxmemory-policy"]["status"] == "ok"  # the test server: noeviction
    assert found["clock-skew"]["status"] == "ok"
    assert found["workers"]["status"] == "fail"
    assert found["profiles"]["status"] == "ok"


def test_eviction_policy_fails(settings: Settings, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # our own server: its config is ours to change
    server.start()
    try:
        redis.Redis(port=server.port).config_set("maxmemory-policy", "allkeys-lru")
        code, report = run_doctor(
            settings.model_copy(update={"redis_url": SecretStr(server.url)}), "--offline"
        )
    finally:
        server.stop()
    found = checks(report)
    assert code == 1
    assert found["maxmemory-policy"]["status"] == "fail"
    assert "allkeys-lru" in found["maxmemory-policy"]["detail"]
    assert "noeviction" in found["maxmemory-policy"]["fix"]
    assert found["appendonly"]["status"] == "ok"  # RedisServer runs with AOF on


def test_unreachable_redis_fails(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})
    code, report = run_doctor(nowhere, "--offline")
    assert code == 1
    assert checks(report)["redis"]["status"] == "fail"


def test_missing_cli_fails_and_the_worker_refuses_to_start(settings: Settings) -> None:
    missing = settings.model_copy(update={"claude_bin": "/nonexistent/claude"})
    code, report = run_doctor(missing, "--offline")
    assert code == 1
    cli = checks(report)["cli"]
    assert cli["status"] == "fail" and "CLAUDE_QUEUE_CLAUDE_BIN" in cli["fix"]
    worker = subprocess.run(
        worker_argv("refused", "--burst"),
        cwd=REPO,
        env=worker_env(missing),
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert worker.returncode == 2
    assert b"/nonexistent/claude" in worker.stderr and b"CLAUDE_QUEUE_CLAUDE_BIN" in worker.stderr


def _registered(client: Client, name: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not any(w.name == name for w in client.status().workers):
        assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)


def test_healthy_with_the_fake_cli_and_a_live_worker(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    _registered(client, "healthy", start_worker("healthy", mode="simple"))
    code, report = run_doctor(settings)
    found = checks(report)
    assert found["cli"]["status"] in {"ok", "warn"}
    assert found["cli-auth"]["status"] == "ok"  # the fake answers the one-turn prompt
    assert found["workers"]["status"] == "ok", found["workers"]
    assert code == 0, report


def test_a_live_worker_is_seen_with_its_heartbeat(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    _registered(client, "alive", start_worker("alive", mode="simple"))
    code, report = run_doctor(settings, "--offline")
    workers = checks(report)["workers"]
    assert workers["status"] == "ok", workers
    assert "alive" in workers["detail"] and "s ago" in workers["detail"]
    assert checks(report)["cli"]["status"] != "fail"  # the fake CLI answers --version
    assert code == 0, report


# -- the judges (pure) -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random", None])
def test_every_evicting_policy_fails(policy: str | None) -> None:
    assert judge_eviction(policy).status is Status.FAIL
    assert judge_eviction("noeviction").status is Status.OK


def test_replicas_against_the_minimum() -> None:
    assert judge_replicas(0, 0, sentinels=False) is None  # nothing asked of replicas
    assert judge_replicas(1, 1, sentinels=False).status is Status.OK  # type: ignore[union-attr]
    short = judge_replicas(0, 1, sentinels=False)
    assert short is not None and short.status is Status.FAIL and "stall" in short.detail
    assert judge_replicas(None, 1, sentinels=True).status is Status.FAIL  # type: ignore[union-attr]
    lonely = judge_replicas(0, 0, sentinels=True)
    assert lonely is not None and lonely.status is Status.WARN


def test_cli_versions() -> None:
    assert judge_cli(None, "claude", None, None).status is Status.FAIL
    assert judge_cli("/bin/claude", "claude", None, "exit code 1").status is Status.FAIL
    ok = judge_cli("/bin/claude", "claude", f"{TESTED_CLI_VERSION} (Claude Code)", None)
    assert ok.status is Status.OK
    other = judge_cli("/bin/claude", "claude", "2.0.1 (Claude Code)", None)
    assert other.status is Status.WARN and TESTED_CLI_VERSION in (other.fix or "")


def test_auth_results() -> None:
    assert judge_auth({"type": "result", "is_error": False}, None).status is Status.OK
    refused = judge_auth({"type": "result", "is_error": True, "result": "Invalid API key"}, None)
    assert refused.status is Status.FAIL and "Invalid API key" in refused.detail
    assert judge_auth(None, "no answer within 60s").status is Status.FAIL


def test_workers_and_clock() -> None:
    assert judge_workers({}, 1000.0).status is Status.FAIL
    assert judge_workers({"a": 990.0}, 1000.0).status is Status.OK
    assert judge_workers({"a": 990.0, "b": 0.0}, 1000.0).status is Status.WARN
    assert judge_workers({"b": 0.0, "c": None}, 1000.0).status is Status.FAIL
    assert judge_clock(0.2).status is Status.OK
    assert judge_clock(-2.0).status is Status.WARN
    assert judge_clock(30.0).status is Status.FAIL


def test_profiles() -> None:
    assert judge_profiles(Settings()).status is Status.OK
    bad = Settings(profiles={"readonly": PermissionProfile(allowed_tools=("Read", "rm -rf /"))})
    assert judge_profiles(bad).status is Status.FAIL
    risky = Settings(profiles={"readonly": PermissionProfile(permission_mode="bypassPermissions")})
    assert judge_profiles(risky).status is Status.WARN
