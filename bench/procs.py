"""Processes: starting and stopping them, running the CLI directly, reading /proc.

Linux only, like claude-queue itself. Nothing here imports the project.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from worker.cliproto import user_message

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
FAKE_CLI = REPO / "tests" / "fakecli" / "claude"
REAL_CLI = REPO / "devtools" / "claude-cli" / "node_modules" / ".bin" / "claude"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

# The invocation the worker uses for a job with the default `readonly` profile
# (worker/command.py): stream-json in and out, the prompt as one `user` message line
# on stdin. The direct baselines run the CLI exactly like this and close stdin after
# the prompt (the CLI then ends after its turn).
SYSTEM_PROMPT = (
    "You are running unattended on a claude-queue worker (bench) for session bench, "
    "run bench. Nobody can answer questions mid-run, so finish the task or explain clearly "
    "what blocked you."
)


def cli_argv(claude_bin: str | Path) -> list[str]:
    return [
        str(claude_bin),
        "--input-format=stream-json",
        "--output-format=stream-json",
        "--verbose",
        "--permission-mode=default",
        f"--append-system-prompt={SYSTEM_PROMPT}",
        "--allowed-tools=Read,Glob,Grep",
    ]


def prompt_line(prompt: str) -> bytes:
    """The prompt as the worker writes it to the CLI's stdin."""
    return user_message(prompt)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment minus CLAUDE_QUEUE_*, the venv first on PATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_QUEUE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def _term_with_parent() -> None:
    """Between fork and exec: SIGTERM this child if the bench dies without cleaning up."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A long-lived helper process (worker, pool) in its own session, output to a file.

    Its own session keeps a terminal Ctrl-C away from it: the bench stops it itself.
    """
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_term_with_parent,  # noqa: PLW1509 - prctl only
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM (RQ: warm shutdown), a second SIGTERM (cold: kill the run), then SIGKILL.

    The two SIGTERMs are sent apart: Python runs one handler for signals that
    arrive together, and the second one must be seen as a second.
    """
    for grace_s in (0.3, timeout_s):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def start_ticks(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot); None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def alive(pid: int, ticks: int | None) -> bool:
    """True while this very process (pid + start time) exists and is not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return False
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and (ticks is None or int(fields[19]) == ticks)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MiB; 0 if the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size in MiB (shared pages split between the processes mapping
    them); 0 if the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reaped_children_cpu_s(pid: int) -> float:
    """CPU seconds of a process's reaped descendants (cutime + cstime), 0 if gone."""
    return _stat_cpu_s(pid, 13)


def descendants_cpu_s(pid: int) -> float:
    """CPU seconds of a process's descendants, reaped (cutime + cstime) and alive (a work
    horse that runs job after job, and what it reaped); 0 if gone."""
    return reaped_children_cpu_s(pid) + sum(
        own_cpu_s(child) + descendants_cpu_s(child) for child in children(pid)
    )


def own_cpu_s(pid: int) -> float:
    """CPU seconds of the process itself (utime + stime), 0 if gone."""
    return _stat_cpu_s(pid, 11)


def _stat_cpu_s(pid: int, first: int) -> float:
    """Two adjacent clock-tick fields of /proc/<pid>/stat (counted after the command)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def kill_if_alive(pid: int, ticks: int | None) -> None:
    if alive(pid, ticks):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
