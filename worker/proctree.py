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

Where to look: a subreaper that kills a run it owns (the CLI is its child) walks its own
subtree (`/proc/<pid>/task/*/children`) for the kill rounds, since while it lives every
process the run started stays below it (1); the marked ones among its direct children
are the run's orphans. That is a few reads instead of one per process on the host. Once
a walk finds nothing alive, one scan of all /proc confirms it (2), so a cancel scans
once instead of twice. Every other caller (a worker sweeping after its dead work horse,
the reaper) scans all of /proc in every round.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from worker.markers import RUN_MARKER_ENV, SCOPE_MARKER_ENV

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
_PR_GET_NAME = 16
_MAX_KILL_ROUNDS = 50
# How long one kill round waits for the processes it SIGKILLed to exit, before it
# scans again (a killed process stays runnable until it is scheduled to die).
_EXIT_WAIT_S = 0.05
_STAT_BYTES = 4096
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat's flags (include/linux/sched.h)
_ENVIRON_CHUNK = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


def enable_subreaper() -> bool:
    """Make this process adopt orphaned descendants. False where unsupported."""
    return bool(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def is_subreaper() -> bool:
    """Whether this process adopts its orphaned descendants (enable_subreaper)."""
    flag = ctypes.c_int(0)
    ok = _libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
    return ok and flag.value != 0


def hide_environment() -> bool:
    """Stop same-user processes (the CLI's tools) reading our /proc/<pid>/environ.

    The worker's environment holds its Redis URL and password. A non-dumpable
    process's /proc files belong to root and it cannot be ptraced by its own user;
    forked work horses inherit this, while the CLI (after exec) does not need it.
    """
    return bool(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def set_process_name(name: str) -> str:
    """Set this thread's name (/proc/<pid>/comm for the main thread: what `ps` shows,
    at most 15 bytes); returns the name it had."""
    old = ctypes.create_string_buffer(16)
    _libc.prctl(_PR_GET_NAME, old, 0, 0, 0)
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    return old.value.decode(errors="replace")


def die_with_parent() -> None:
    """For a child between fork and exec: get SIGKILL when the spawning thread dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def death_signal_prefix() -> tuple[str, ...]:
    """An argv prefix that gives the program after it SIGKILL when its parent dies
    (util-linux's setpriv), or () where setpriv is missing or cannot.

    Spawning through it needs no preexec_fn (die_with_parent). With one, CPython must
    fork the whole worker, copying the page tables of ~60 MB, where it otherwise uses
    vfork: Popen took ~5 ms instead of ~0.3 ms here, on the way to every run's `started`.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        checked = subprocess.run(
            [*prefix, setpriv, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if checked.returncode == 0 else ()


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    state: str
    start_ticks: int
    # A kernel thread (PF_KTHREAD): no user environment, so never a run's process.
    # Most of a small host's processes are (60 of 81 here); skipping their environ
    # reads halves a /proc-wide marker scan.
    kernel: bool = False


def _read_proc(path: str, *, whole: bool) -> bytes | None:
    """A /proc file's bytes (the first read only, unless `whole`); None if unreadable.

    Plain os.open/os.read: a sweep reads two files per process, and a buffered file
    object costs several times the syscalls' own time.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _ENVIRON_CHUNK if whole else _STAT_BYTES)
        if whole and len(data) == _ENVIRON_CHUNK:
            chunks = [data]
            while chunk := os.read(fd, _ENVIRON_CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the process is gone."""
    data = _read_proc(f"/proc/{pid}/stat", whole=False)
    if data is None:
        return None
    raw = data.decode("utf-8", errors="replace")
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(
            pid=pid,
            ppid=int(fields[1]),
            state=fields[0],
            start_ticks=int(fields[19]),
            kernel=bool(int(fields[6]) & _PF_KTHREAD),
        )
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
    environ = _read_proc(f"/proc/{pid}/environ", whole=True)
    return environ is not None and marker in environ.split(b"\0")


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
    return _run_pids(run_id, root_pid, _all_stats())


def _run_pids(run_id: str, root_pid: int | None, all_stats: list[ProcStat]) -> set[int]:
    marker = f"{RUN_MARKER_ENV}={run_id}".encode()
    me = os.getpid()
    stats = [s for s in all_stats if s.state not in ("Z", "X") and s.pid != me and not s.kernel]
    found = _descendants(root_pid, stats) if root_pid is not None else set()
    if root_pid is not None and any(s.pid == root_pid for s in stats):
        found.add(root_pid)
    found.update(s.pid for s in stats if s.pid not in found and _has_marker(s.pid, marker))
    return found


def _children(pid: int) -> list[int] | None:
    """The pids `pid` forked (each thread keeps its own list); None if unreadable."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: list[int] = []
    for tid in tids:
        data = _read_proc(f"/proc/{pid}/task/{tid}/children", whole=True)
        if data is None:
            return None
        found.extend(int(child) for child in data.split())
    return found


def _subtree_stats(run_id: str, root_pid: int) -> list[ProcStat] | None:
    """The run's processes found from our own children: the root (our child) and our
    children carrying the run's marker (its orphans, adopted by us), with everything
    below them; then our other zombie children (for _reap_adopted, as a scan finds
    them). Everything but those zombies is the run's. None if /proc lists no children.

    Our own children are read again after each descent, until nothing new turns up: a
    process whose parent died while we walked (the root, killed just before) is handed
    to us before that parent shows as a zombie, so a later read finds it."""
    marker = f"{RUN_MARKER_ENV}={run_id}".encode()
    stats: list[ProcStat] = []
    seen: set[int] = set()
    checked: set[int] = set()  # our children already looked at
    stack: list[int] = []
    while True:
        while stack:
            pid = stack.pop()
            stat = None if pid in seen else read_stat(pid)
            if stat is None:
                continue
            seen.add(pid)
            stats.append(stat)
            stack.extend(_children(pid) or ())
        own = _children(os.getpid())
        if own is None:
            return None
        fresh = [pid for pid in own if pid not in seen and pid not in checked]
        checked.update(fresh)
        stack = [pid for pid in fresh if pid == root_pid or _has_marker(pid, marker)]
        if not stack:
            break
    # Our zombie children that are not the run's: for _reap_adopted, as a scan finds them.
    for pid in own:
        stat = None if pid in seen else read_stat(pid)
        if stat is not None and stat.state == "Z":
            stats.append(stat)
    return stats


def _reap_adopted(exclude: int | None, stats: list[ProcStat] | None = None) -> None:
    """Collect zombies of orphans reparented to us (we are their subreaper)."""
    me = os.getpid()
    for stat in _all_stats() if stats is None else stats:
        if stat.ppid == me and stat.state == "Z" and stat.pid != exclude:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(stat.pid, os.WNOHANG)


def _await_exit(pids: Iterable[int], timeout_s: float) -> None:
    """Wait (up to timeout_s) until every pid has exited; pidfds, so no polling."""
    poller = select.poll()
    fds: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(OSError):  # already gone, or no pidfd support
                fd = os.pidfd_open(pid)
                fds.append(fd)
                poller.register(fd, select.POLLIN)
        pending = len(fds)
        deadline = time.monotonic() + timeout_s
        while pending:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return
            for fd, _mask in poller.poll(left_s * 1000):
                poller.unregister(fd)
                pending -= 1
    finally:
        for fd in fds:
            os.close(fd)


def kill_run_tree(run_id: str, root_pid: int | None) -> int:
    """SIGKILL every process of the run until none is left; returns how many were signalled.

    The root (our direct child) is left for its owner to reap so its exit status
    is not lost; adopted orphans are reaped here. Each round is one walk of our subtree
    or one pass over /proc (either also reaps adopted zombies), SIGKILL to what it
    found, and a pidfd wait for those to exit, so the next round sees them gone rather
    than dying.
    """
    # What we SIGKILLed, by pid and start time: it counts as alive until it is a zombie
    # or gone. A dying process loses its memory, and with it the environ that carries
    # the run's marker, before it turns zombie (a real CLI under load, a CI run saw).
    signalled: dict[int, int | None] = {}
    # Our own subtree holds the whole run while we are its subreaper (module doc).
    walk = root_pid is not None and is_subreaper()
    if root_pid is not None and is_alive(root_pid):
        # Our own unreaped child: its pid cannot have been reused, so kill it first.
        with contextlib.suppress(ProcessLookupError):
            os.kill(root_pid, signal.SIGKILL)
        signalled[root_pid] = start_ticks(root_pid)
        if not walk:
            # A scan then finds its children as ours (adopted), not as a dying root's.
            _await_exit([root_pid], _EXIT_WAIT_S)
        # A walk finds them either way: below the dying root, or adopted once it is
        # gone; a root still dying counts as alive, so the rounds go on until it is not
        # (and a scan of all /proc confirms the end).
    for _ in range(_MAX_KILL_ROUNDS):
        tree = _subtree_stats(run_id, root_pid) if walk and root_pid is not None else None
        if tree is not None:
            stats = tree
            alive = {s.pid for s in tree if s.state not in ("Z", "X")} | _dying(signalled)
            if not alive:
                # The walk found the run gone: one scan of all /proc confirms it (net 2),
                # in case something got past the walk. A CI run once saw a setsid
                # grandchild outlive its cancelled run with the walk alone.
                walk = False
                _reap_adopted(root_pid, stats)
                continue
        else:
            stats = _all_stats()
            alive = _run_pids(run_id, root_pid, stats) | _dying(signalled)
        _reap_adopted(root_pid, stats)
        if not alive:
            break
        ticks = {s.pid: s.start_ticks for s in stats}
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            signalled.setdefault(pid, ticks.get(pid))
        _await_exit(alive, _EXIT_WAIT_S)
    else:
        _reap_adopted(root_pid)  # gave up: still collect what did die
    return len(signalled)


def _dying(signalled: dict[int, int | None]) -> set[int]:
    """The processes we SIGKILLed that are still there (same start time), not zombies."""
    stats = [(read_stat(pid), ticks) for pid, ticks in signalled.items() if ticks is not None]
    return {s.pid for s, t in stats if s and s.start_ticks == t and s.state not in ("Z", "X")}


def marked_runs(scope: str) -> set[str]:
    """Run ids carried by live processes of this deployment (same scope marker)."""
    run_prefix = f"{RUN_MARKER_ENV}=".encode()
    scope_item = f"{SCOPE_MARKER_ENV}={scope}".encode()
    found: set[str] = set()
    for stat in _all_stats():
        if stat.state in ("Z", "X") or stat.kernel:
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
