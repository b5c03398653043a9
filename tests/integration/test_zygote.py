"""The tests' fork server gives the same process a fresh `python -m producer` would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings
from tests.conftest import REPO, worker_env
from tests.zygote import Zygote


def _both(zygote: Zygote, args: list[str], env: dict[str, str], tmp_path: Path) -> list[str]:
    """Output and return code of `python -m <args>`: forked, then started fresh."""
    seen = []
    for how in ("forked", "fresh"):
        out = tmp_path / f"{how}.out"
        with out.open("wb") as handle:
            if how == "forked":
                fd = handle.fileno()
                proc: subprocess.Popen[bytes] = zygote.spawn(
                    args, env=env, cwd=REPO, stdout=fd, stderr=fd
                )
            else:
                proc = subprocess.Popen(
                    [sys.executable, "-m", *args],
                    env=env,
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
        code = proc.wait(timeout=60)
        seen.append(f"{code}\n{out.read_text()}")
    return seen


def test_a_usage_error_reads_as_from_a_fresh_interpreter(zygote: Zygote, tmp_path: Path) -> None:
    forked, fresh = _both(zygote, ["producer", "nosuch"], dict(os.environ), tmp_path)
    assert forked == fresh
    assert forked.startswith("2\nUsage: python -m producer")


def test_settings_come_from_the_requests_environment(
    zygote: Zygote, settings: Settings, tmp_path: Path
) -> None:
    """A worker that cannot find its CLI names the configured path, in both processes."""
    missing = tmp_path / "no-such-claude"
    env = worker_env(
        settings.model_copy(update={"claude_bin": str(missing)}), {"TMPDIR": str(tmp_path)}
    )
    forked, fresh = _both(zygote, ["producer", "worker", "--burst"], env, tmp_path)
    assert forked.split("\n", 1)[0] == fresh.split("\n", 1)[0] != "0"
    assert str(missing) in forked and str(missing) in fresh


def test_signals_and_return_codes_follow_popen(
    zygote: Zygote, settings: Settings, tmp_path: Path
) -> None:
    with (tmp_path / "w.log").open("wb") as log:
        fd = log.fileno()
        proc = zygote.spawn(
            ["producer", "worker", "--name", "zyg"],
            env=worker_env(settings),
            cwd=REPO,
            stdout=fd,
            stderr=fd,
        )
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL
    proc.send_signal(signal.SIGKILL)  # after the end: nothing to signal, no error


def test_run_captures_like_subprocess_run(zygote: Zygote, settings: Settings) -> None:
    env = worker_env(settings)
    for args, stdin in ((["producer", "--help"], None), (["producer", "nosuch"], "ignored")):
        forked = zygote.run(args, env=env, input=stdin)
        fresh = subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            cwd=REPO,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        )
        assert forked.stdout or forked.stderr


def test_a_different_pythonpath_gets_a_fresh_interpreter(zygote: Zygote, tmp_path: Path) -> None:
    (tmp_path / "zygote_probe.py").write_text("print('found on PYTHONPATH')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert not zygote.can_run(env) and zygote.can_run(dict(os.environ))
    done = zygote.run(["zygote_probe"], env=env)
    assert (done.returncode, done.stdout) == (0, "found on PYTHONPATH\n"), done.stderr
