"""Find and kill every process a run started, wherever it went.

The CLI starts its tool commands in new sessions, so a process-group kill misses
them, and once the CLI dies they are reparented away from its tree. We use two
independent nets so nothing escapes:

1. The worker is a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER): orphans of
   the run are reparented to the worker instead of init, so they stay in our tree.
2. Every process of a run inherits the environment marker `CLAUDE_QUEUE_RUN_ID=<run id>`;
   a sweep of /proc finds every process carrying it, even one that escaped (1).

Kills are repeated until a scan finds nothing alive, so a process forking while
we kill is caught on the next round. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass

from worker.markers import RUN_MARKER_ENV, SCOPE_MARKER_ENV

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_MAX_KILL_ROUNDS = 50

_libc = ctypes.CDLL(None, use_errno=True)


def enable_subreaper() -> bool:
    """Make this process adopt orphaned descendants. False where unsupported."""
    return bool(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def hide_environment() -> bool:
    """Stop same-user processes (the CLI's tools) reading our /proc/<pid>/environ.

    The worker's environment holds its Redis URL and password. A non-dumpable
    process's /proc files belong to root and it cannot be ptraced by its own user;
    forked work horses inherit this, while the CLI (after exec) does not need it.
    """
    return bool(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def die_with_parent() -> None:
    """For a child between fork and exec: get SIGKILL when the spawning thread dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    state: str
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(pid=pid, ppid=int(fields[1]), state=fields[0], start_ticks=int(fields[19]))
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot): pid + this identify a process."""
    stat = read_stat(pid)
    return stat.start_ticks if stat else None


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def _all_stats() -> list[ProcStat]:
    stats = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats.append(stat)
    return stats


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _descendants(root: int, stats: list[ProcStat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def run_processes(run_id: str, root_pid: int | None = None) -> set[int]:
    """Live pids of a run: descendants of its root plus anything carrying its marker."""
    marker = f"{RUN_MARKER_ENV}={run_id}".encode()
    me = os.getpid()
    stats = [s for s in _all_stats() if s.state not in ("Z", "X") and s.pid != me]
    found = _descendants(root_pid, stats) if root_pid is not None else set()
    if root_pid is not None and any(s.pid == root_pid for s in stats):
        found.add(root_pid)
    found.update(s.pid for s in stats if s.pid not in found and _has_marker(s.pid, marker))
    return found


def _reap_adopted(exclude: int | None) -> None:
    """Collect zombies of orphans reparented to us (we are their subreaper)."""
    me = os.getpid()
    for stat in _all_stats():
        if stat.ppid == me and stat.state == "Z" and stat.pid != exclude:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(stat.pid, os.WNOHANG)


def kill_run_tree(run_id: str, root_pid: int | None) -> int:
    """SIGKILL every process of the run until none is left; returns how many were signalled.

    The root (our direct child) is left for its owner to reap so its exit status
    is not lost; adopted orphans are reaped here.
    """
    signalled: set[int] = set()
    if root_pid is not None and is_alive(root_pid):
        # Our own unreaped child: its pid cannot have been reused, so kill it first.
        with contextlib.suppress(ProcessLookupError):
            os.kill(root_pid, signal.SIGKILL)
        signalled.add(root_pid)
    for attempt in range(_MAX_KILL_ROUNDS):
        alive = run_processes(run_id, root_pid)
        if not alive:
            break
        if attempt:
            # A SIGKILLed process can take a moment to leave the run queue.
            time.sleep(0.002 * attempt)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            signalled.add(pid)
        _reap_adopted(root_pid)
    _reap_adopted(root_pid)
    return len(signalled)


def marked_runs(scope: str) -> set[str]:
    """Run ids carried by live processes of this deployment (same scope marker)."""
    run_prefix = f"{RUN_MARKER_ENV}=".encode()
    scope_item = f"{SCOPE_MARKER_ENV}={scope}".encode()
    found: set[str] = set()
    for stat in _all_stats():
        if stat.state in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{stat.pid}/environ", "rb") as handle:
                items = handle.read().split(b"\0")
        except OSError:
            continue
        if scope_item in items:
            found.update(
                item[len(run_prefix) :].decode(errors="replace")
                for item in items
                if item.startswith(run_prefix)
            )
    return found
