"""Warm CLIs: a session's CLI kept alive after its run, so the session's next run on
this worker skips the CLI's start-up and resume.

Who owns them: the worker process itself, in simple (non-forking) mode. A CLI is the
child of the process that spawned it, gets its parent-death signal from it, and its
orphans are reparented to it (subreaper). In fork mode that process is the work horse,
which exits after each job, so nothing there can outlive a job without giving up the
parent-death guarantee; a simple-mode worker keeps every guarantee unchanged. Fork
mode therefore never keeps a CLI warm.

A warm CLI is reused only for the very next run of its session, and only when:
- no other run of the session started since (its fencing token is the next one);
- the session still names the conversation the CLI holds;
- the run's CLI flags, cwd, environment and binary are exactly those it started with.
Otherwise it is closed (never reused) and the run starts cold, saying why.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from shared.events import ColdReason
from worker.command import CliCommand
from worker.markers import RUN_MARKER_ENV
from worker.process import CliProcess

log = structlog.get_logger(__name__)

# Flags that differ per run without changing the process's behaviour for a warm turn.
_PER_RUN_FLAGS = ("--append-system-prompt=", "--resume=")
_EXIT_WAIT_S = 1.0
_REMEMBER_CLOSED = 1000  # sessions whose warm CLI closed, so a cold start can say why

Fingerprint = tuple[tuple[str, ...], str | None, tuple[tuple[str, str], ...]]


def fingerprint(command: CliCommand) -> Fingerprint:
    """What must match for a warm CLI to take a run: flags, binary, cwd, environment."""
    argv = tuple(a for a in command.argv if not a.startswith(_PER_RUN_FLAGS))
    env = tuple(sorted((k, v) for k, v in command.env.items() if k not in (RUN_MARKER_ENV,)))
    return argv, command.cwd, env


@dataclass(slots=True)
class WarmCli:
    """A live CLI between runs of its session (owned by the pool while parked)."""

    session_id: str
    proc: CliProcess
    tree_id: str  # the run id its processes carry as their marker (the run that spawned it)
    fingerprint: Fingerprint
    token: int  # fencing token of the last run it served
    claude_session_id: str
    tmpdir: str  # its private TMPDIR, removed when it closes
    expires_at: float = 0.0  # epoch seconds
    due: float = field(default=0.0)  # monotonic

    def close(self) -> None:
        """End it: stdin closed, a moment to exit by itself, then its tree killed and reaped."""
        proc = self.proc
        proc.close_stdin()
        deadline = time.monotonic() + _EXIT_WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            proc.read(0.05)  # drains what it prints; notices its exit
        proc.kill_tree()
        if proc.pid:
            proc.wait()
        proc.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class WarmPool:
    """The warm CLIs of one worker process, at most `max_size`, each for `idle_s`."""

    def __init__(
        self, *, idle_s: float, max_size: int, on_park: Callable[[], None] | None = None
    ) -> None:
        self.idle_s = idle_s
        self.max_size = max_size
        self._on_park = on_park  # called after each park, outside the lock
        self._lock = threading.Lock()
        self._warm: OrderedDict[str, WarmCli] = OrderedDict()  # least recently used first
        self._closed: OrderedDict[str, ColdReason] = OrderedDict()
        self._closed_trees: list[str] = []  # markers of CLIs closed since the last drain
        self._evicted: list[WarmCli] = []  # pushed out by a park, closed after its run

    @property
    def enabled(self) -> bool:
        return self.idle_s > 0 and self.max_size > 0

    def take(
        self,
        session_id: str,
        *,
        fingerprint: Fingerprint,
        token: int,
        claude_session_id: str | None,
    ) -> tuple[WarmCli | None, ColdReason | None]:
        """The session's warm CLI if it may take this run; else None and why (if it
        had one). A warm CLI that may not is closed here: it is never reused."""
        with self._lock:
            warm = self._warm.pop(session_id, None)
            if warm is None:
                return None, self._closed.pop(session_id, None)
        reason: ColdReason | None = None
        if warm.proc.poll() is not None or not warm.proc.stdin_open:
            reason = ColdReason.EXPIRED  # it died while parked
        elif token != warm.token + 1 or claude_session_id != warm.claude_session_id:
            reason = ColdReason.MOVED
        elif fingerprint != warm.fingerprint:
            reason = ColdReason.MISMATCH
        if reason is None:
            return warm, None
        log.info("warm_cli_not_reused", session_id=session_id, reason=reason.value)
        self._close(warm)
        return None, reason

    def park(self, warm: WarmCli) -> None:
        """Keep a CLI warm after its run; the least recently used go beyond max_size.

        Those are closed by close_evicted, which the worker calls once the run is over:
        closing one (its exit, the tree kill, ~12 ms here) held the run's `finished`."""
        warm.due = time.monotonic() + self.idle_s
        warm.expires_at = time.time() + self.idle_s
        with self._lock:
            self._closed.pop(warm.session_id, None)
            self._warm[warm.session_id] = warm
            self._warm.move_to_end(warm.session_id)
            while len(self._warm) > self.max_size:
                _, oldest = self._warm.popitem(last=False)
                self._note_closed(oldest.session_id, ColdReason.EXPIRED)
                self._evicted.append(oldest)
        log.info("warm_cli_parked", session_id=warm.session_id, pid=warm.proc.pid)
        if self._on_park is not None:
            self._on_park()

    def close_evicted(self) -> None:
        """Close the CLIs parks pushed out of the pool. The worker's loop calls this
        between jobs: a close that fails (an OSError) is logged, and the others still
        closed (what it left running keeps its warm-tree record, so the orphan sweep ends
        it once that expires)."""
        with self._lock:
            evicted, self._evicted = self._evicted, []
        for index, oldest in enumerate(evicted):
            log.info("warm_cli_evicted", session_id=oldest.session_id)
            try:
                self._close(oldest)
            except OSError as exc:  # between jobs: never the end of the worker
                log.error("warm_cli_close_failed", session_id=oldest.session_id, error=str(exc))
            except BaseException:
                # Anything else goes on up: above all RQ's StopRequested, which its SIGTERM
                # handler raises in an idle worker (caught here, the stop was lost and the
                # worker went on taking jobs). What is left, this one too, stays set aside
                # for close_all when the worker stops (closing one twice is harmless).
                with self._lock:
                    self._evicted[:0] = evicted[index:]
                raise

    def expire(self, monotonic: float | None = None) -> list[str]:
        """Close CLIs idle past WARM_IDLE_S; their session ids."""
        now = time.monotonic() if monotonic is None else monotonic
        with self._lock:
            due = [w for w in self._warm.values() if w.due <= now]
            for warm in due:
                del self._warm[warm.session_id]
                self._note_closed(warm.session_id, ColdReason.EXPIRED)
        for warm in due:
            log.info("warm_cli_expired", session_id=warm.session_id)
            self._close(warm)
        return [w.session_id for w in due]

    def discard(self, session_id: str, reason: ColdReason = ColdReason.MOVED) -> bool:
        """Close the session's warm CLI now (the session moved on); True if there was one."""
        with self._lock:
            warm = self._warm.pop(session_id, None)
            if warm is not None:
                self._note_closed(session_id, reason)
        if warm is None:
            return False
        log.info("warm_cli_discarded", session_id=session_id, reason=reason.value)
        self._close(warm)
        return True

    def close_all(self) -> None:
        with self._lock:
            warm = [*self._warm.values(), *self._evicted]
            self._warm.clear()
            self._evicted = []
        for cli in warm:
            self._close(cli)

    def sessions(self) -> dict[str, float]:
        """Session id -> epoch seconds its warm CLI expires."""
        with self._lock:
            return {s: w.expires_at for s, w in self._warm.items()}

    def tokens(self) -> dict[str, int]:
        """Session id -> fencing token of the last run its warm CLI served."""
        with self._lock:
            return {s: w.token for s, w in self._warm.items()}

    def trees(self) -> dict[str, float]:
        """Marker -> epoch expiry of every warm CLI (what other workers' sweeps spare)."""
        with self._lock:
            return {w.tree_id: w.expires_at for w in self._warm.values()}

    def drain_closed_trees(self) -> list[str]:
        """Markers of CLIs closed since the last call."""
        with self._lock:
            closed, self._closed_trees = self._closed_trees, []
        return closed

    def _close(self, warm: WarmCli) -> None:
        warm.close()
        with self._lock:
            self._closed_trees.append(warm.tree_id)

    def tree_ids(self) -> set[str]:
        """Markers of the warm CLIs' processes, evicted ones not yet closed among them
        (the orphan sweep must spare them)."""
        with self._lock:
            return {w.tree_id for w in (*self._warm.values(), *self._evicted)}

    def _note_closed(self, session_id: str, reason: ColdReason) -> None:
        self._closed[session_id] = reason
        while len(self._closed) > _REMEMBER_CLOSED:
            self._closed.popitem(last=False)
