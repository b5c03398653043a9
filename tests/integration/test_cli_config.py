"""Every command, the worker included, fails in one line on bad configuration or no Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.settings import Settings
from tests.conftest import REPO, worker_env

_COMMANDS = [
    ("status",),
    ("sessions",),
    ("tail", "s1", "--no-follow"),
    ("submit", "hi", "--session", "s1"),
    ("cancel", "s1"),
    ("worker", "--burst"),
    ("worker", "--burst", "--processes", "2"),
]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert "Traceback" not in done.stdout, done.stdout


@pytest.mark.parametrize("args", _COMMANDS, ids=" ".join)
def test_unknown_setting_stops_every_command(settings: Settings, args: tuple[str, ...]) -> None:
    env = worker_env(settings)
    env["CLAUDE_QUEUE_REDIS_URLL"] = "redis://elsewhere:6379/0"
    done = _run(env, *args)
    assert done.returncode == 2, done.stderr
    _no_traceback(done)
    assert "CLAUDE_QUEUE_REDIS_URLL" in done.stderr
    assert "did you mean CLAUDE_QUEUE_REDIS_URL?" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", _COMMANDS, ids=" ".join)
def test_bad_url_scheme_is_a_usage_error(settings: Settings, args: tuple[str, ...]) -> None:
    env = worker_env(settings)
    env["CLAUDE_QUEUE_REDIS_URL"] = "http://user:hunter2@127.0.0.1:6379/0"
    done = _run(env, *args)
    assert done.returncode == 2, done.stderr
    _no_traceback(done)
    assert "CLAUDE_QUEUE_REDIS_URL" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("args", _COMMANDS, ids=" ".join)
def test_unreachable_redis_exits_3_without_leaking_credentials(
    settings: Settings, args: tuple[str, ...]
) -> None:
    env = worker_env(settings)
    env["CLAUDE_QUEUE_REDIS_URL"] = "redis://admin:hunter2@127.0.0.1:1/0?password=qwerty"
    done = _run(env, *args)
    assert done.returncode == 3, done.stderr + done.stdout
    _no_traceback(done)
    output = done.stderr + done.stdout
    assert "hunter2" not in output
    assert "qwerty" not in output
    assert "127.0.0.1:1" in output


@pytest.mark.parametrize("args", [("status",), ("worker", "--burst"), ("serve",)], ids=" ".join)
def test_a_list_setting_that_is_not_json_is_a_usage_error(
    settings: Settings, args: tuple[str, ...]
) -> None:
    env = worker_env(settings)
    env["CLAUDE_QUEUE_API_KEYS"] = "not-json"
    done = _run(env, *args)
    assert done.returncode == 2, done.stderr
    _no_traceback(done)
    assert "CLAUDE_QUEUE_API_KEYS: not valid JSON" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
