"""The CLI's environment is allow-listed and its cwd confined: real workers, a CLI that
dumps what it was given (tests/fakecli/envdump)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from producer.client import Client
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory
from tests.helpers import texts
from worker import markers, workdir

ENVDUMP = REPO / "tests" / "fakecli" / "envdump"
MARKERS = {markers.RUN_MARKER_ENV, markers.SCOPE_MARKER_ENV}
WORKER_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-must-not-leak",
    "AWS_ACCESS_KEY_ID": "AKIA-must-not-leak",
    "REDIS_PASSWORD": "redis-password-must-not-leak",
    "GITHUB_TOKEN": "gh-token-must-not-leak",
}


def _run(client: Client, session_id: str, **fields: Any) -> list[Envelope]:
    handle = client.submit(session_id=session_id, prompt="dump", **fields)
    events = list(handle.stream(timeout_s=60))
    assert events[-1].type is EventType.FINISHED
    assert [e.type for e in events].count(EventType.FINISHED) == 1
    return events


def _dump(events: list[Envelope]) -> dict[str, Any]:
    """What envdump reported: {"cwd": ..., "env": {...}}."""
    (text,) = texts(events)
    dump: dict[str, Any] = json.loads(text)
    return dump


def _refused(events: list[Envelope]) -> dict[str, Any]:
    """A run that failed before the CLI started: its one error event's data."""
    types = [e.type for e in events]
    assert EventType.STARTED not in types, types
    assert events[-1].data["status"] == "failed"
    (error,) = [e.data for e in events if e.type is EventType.ERROR]
    return error


@pytest.fixture
def envdump_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "claude_bin": str(ENVDUMP),
            "cli_env_passthrough": ("CQ_TEST_PASSED_THROUGH",),
            "extra_env": {"ENVDUMP_LOG": str(tmp_path / "envdump.log")},
        }
    )


def test_cli_environment_holds_no_worker_secrets(
    client: Client, envdump_settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker(
        settings_override=envdump_settings,
        env={
            **WORKER_SECRETS,
            "CQ_TEST_PASSED_THROUGH": "operator-chose-this",
            "CQ_TEST_NOT_LISTED": "not-listed",
            "ANTHROPIC_API_KEY": "sk-ant-the-cli-needs-this",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": str(tmp_path),
        },
    )
    events = _run(client, "envdump")
    assert events[-1].data["status"] == "succeeded"
    env: dict[str, str] = _dump(events)["env"]

    assert set(WORKER_SECRETS).isdisjoint(env), set(WORKER_SECRETS) & set(env)
    leaked = [v for v in env.values() if any(s in v for s in WORKER_SECRETS.values())]
    assert leaked == []
    worker_settings = {name for name in env if name.upper().startswith("CLAUDE_QUEUE_")}
    assert worker_settings == MARKERS
    assert env[markers.RUN_MARKER_ENV] == events[-1].run_id
    assert envdump_settings.redis_url.get_secret_value() not in env.values()

    assert env["CQ_TEST_PASSED_THROUGH"] == "operator-chose-this"
    assert "CQ_TEST_NOT_LISTED" not in env
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-the-cli-needs-this"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] and env["HOME"]


def test_job_without_cwd_runs_in_its_session_scratch_folder(
    client: Client, envdump_settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    tempdir = tmp_path / "worker-tmp"
    tempdir.mkdir()
    start_worker(settings_override=envdump_settings, env={"TMPDIR": str(tempdir)})
    first = _dump(_run(client, "no-cwd"))
    scratch = workdir.scratch_path(str(tempdir.resolve()), envdump_settings.scope, "no-cwd")
    assert first["cwd"] == scratch
    assert first["cwd"] != str(REPO)  # never the worker's own (install) folder
    assert stat.S_IMODE(os.stat(scratch).st_mode) == 0o700
    # The next run of the session continues there; another session gets its own folder.
    assert _dump(_run(client, "no-cwd"))["cwd"] == scratch
    other = _dump(_run(client, "no-cwd-2"))["cwd"]
    assert other == workdir.scratch_path(str(tempdir.resolve()), envdump_settings.scope, "no-cwd-2")


def test_cwd_outside_the_roots_fails_before_the_cli_starts(
    client: Client, envdump_settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    base = tmp_path.resolve()
    root, outside = base / "root", base / "outside"
    (root / "repo").mkdir(parents=True)
    (base / "root-evil").mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "alias").symlink_to(root / "repo")
    log = Path(envdump_settings.extra_env["ENVDUMP_LOG"])
    start_worker(
        settings_override=envdump_settings.model_copy(update={"cwd_roots": (str(root),)}),
    )

    for session_id, cwd in [
        ("outside", outside),
        ("prefix-trick", base / "root-evil"),
        ("symlink-escape", root / "escape"),
        ("dotdot", root / "repo" / ".." / ".." / "outside"),
    ]:
        error = _refused(_run(client, session_id, cwd=str(cwd)))
        assert error["code"] == "cwd_not_allowed", (session_id, error)
        assert not log.exists(), f"{session_id}: the CLI was started"

    gone = _refused(_run(client, "missing", cwd=str(root / "gone")))
    assert gone["code"] == "cwd_not_found"
    assert not log.exists()

    # Inside the roots the CLI starts, in the resolved folder.
    allowed = _run(client, "inside", cwd=str(root / "alias"))
    assert allowed[-1].data["status"] == "succeeded"
    assert _dump(allowed)["cwd"] == str(root / "repo")
    assert len(log.read_text().splitlines()) == 1


def test_a_stored_session_cwd_is_confined_too(
    client: Client, envdump_settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    root = tmp_path.resolve() / "root"
    root.mkdir()
    log = Path(envdump_settings.extra_env["ENVDUMP_LOG"])
    start_worker(
        settings_override=envdump_settings.model_copy(update={"cwd_roots": (str(root),)}),
    )
    # Anyone who can write Redis can rewrite the session's remembered cwd.
    client.redis.hset(client.keys.session_state("stored"), mapping={"cwd": "/etc"})
    error = _refused(_run(client, "stored"))
    assert error["code"] == "cwd_not_allowed"
    assert "/etc" in str(error["message"])
    assert not log.exists()
