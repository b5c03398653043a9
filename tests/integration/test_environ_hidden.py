"""A worker's environment (its Redis password) cannot be read by the CLI's tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings
from tests.conftest import REPO, worker_env

# Runs as an unprivileged user: a child tries to read its parent's /proc/<pid>/environ.
_PROBE = """
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from worker.proctree import hide_environment
if sys.argv[2] == "hide":
    assert hide_environment()
reader = (
    "import os\\n"
    "try:\\n"
    "    data = open(f'/proc/{os.getppid()}/environ', 'rb').read()\\n"
    "    print('read', b'SECRET_MARK_7f3a' in data)\\n"
    "except PermissionError:\\n"
    "    print('denied')\\n"
)
print(subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True).stdout)
"""


def _probe(mode: str) -> str:
    """Run the probe as a non-root user (nobody when the tests run as root)."""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://:SECRET_MARK_7f3a@host/0"}
    if os.geteuid() == 0:
        python = shutil.which("python3", path="/usr/bin:/bin")
        assert python, "the probe needs a system python3 that user nobody can run"
        argv, user = [python, "-c", _PROBE, str(REPO), mode], "nobody"
    else:
        argv, user = [sys.executable, "-c", _PROBE, str(REPO), mode], None
    done = subprocess.run(
        argv, env=env, user=user, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_a_child_of_the_same_user_reads_nothing_once_hidden() -> None:
    assert _probe("plain") == "read True"  # the hole, without the protection
    assert _probe("hide") == "denied"


def test_the_worker_hides_its_environment_at_start(settings: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        done = subprocess.run(
            [sys.executable, "-m", "producer", "worker", "--burst", "--name", "hidden"],
            cwd=REPO,
            env=worker_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, log_path.read_text()
    starting = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and '"worker_starting"' in line
    ]
    assert len(starting) == 1
    assert starting[0]["environment_hidden"] is True
