"""Shell completion: the scripts, and session ids completed from Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from producer.client import Client
from shared.settings import Settings
from tests.cli.support import run
from tests.conftest import REPO, worker_env

# The installed command: a shell's completion calls it by this name.
COMMAND = Path(sys.executable).parent / "claude-queue"


def complete(settings: Settings, words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash would be offered for the last word of `words`."""
    extra = {
        "_CLAUDE_QUEUE_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
        **(env or {}),
    }
    done = subprocess.run(
        [str(COMMAND)],
        env=worker_env(settings, extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stderr == ""
    # bash_complete prints `type,value` lines: `plain,alpha-1`
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_each_shells_script(settings: Settings, shell: str) -> None:
    done = run(settings, "completion", shell)
    assert done.returncode == 0, done.stderr
    assert "_CLAUDE_QUEUE_COMPLETE" in done.stdout
    assert f"{shell}_complete" in done.stdout
    assert run(settings, "completion", "powershell").returncode == 2


def test_session_ids_complete_from_redis(settings: Settings, client: Client) -> None:
    for session_id in ("alpha-1", "alpha-2", "beta"):
        client.submit(session_id=session_id, prompt="hi")
    assert sorted(complete(settings, "claude-queue tail al")) == ["alpha-1", "alpha-2"]
    assert complete(settings, "claude-queue session show b") == ["beta"]
    assert complete(settings, "claude-queue cancel z") == []
    no_redis = {"CLAUDE_QUEUE_REDIS_URL": "redis://127.0.0.1:1/0"}  # no ids, no traceback
    assert complete(settings, "claude-queue tail al", no_redis) == []
