"""Which CLI a run uses: its session's warm one (worker/warm.py) or a new one; and
whether it is kept warm afterwards. The runner's glue around the WarmPool."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass

import redis
import structlog

from shared.events import ColdReason
from shared.jobs import RunRequest
from worker.command import CliCommand
from worker.context import WorkerContext
from worker.outcome import RunObservations
from worker.process import CliProcess
from worker.pump import CancelState
from worker.warm import Fingerprint, WarmCli, fingerprint

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class CliUse:
    """The CLI of one run, and what the run needs to know about where it came from."""

    proc: CliProcess
    tmpdir: str  # its private TMPDIR (the warm CLI's own, if reused)
    tree_id: str  # the marker its processes carry
    fingerprint: Fingerprint
    warm: bool = False
    cold_reason: ColdReason | None = None
    parked: bool = False  # kept warm after the run: the pool owns it now

    def release(self) -> None:
        """End of the run: kill, reap and clean up, unless the pool took the CLI."""
        if self.parked:
            return
        self.proc.kill_tree()
        if self.proc.pid:
            self.proc.wait()
        self.proc.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def acquire(
    request: RunRequest,
    ctx: WorkerContext,
    command: CliCommand,
    *,
    token: str,
    resume_id: str | None,
) -> CliUse:
    """The session's warm CLI if it may take this run, else a new (unspawned) one."""
    settings, run_id = ctx.settings, request.run_id
    wanted = fingerprint(command)
    reason: ColdReason | None = None
    if ctx.warm is not None:
        warm, reason = ctx.warm.take(
            request.job.session_id,
            fingerprint=wanted,
            token=int(token),
            claude_session_id=resume_id,
        )
        if warm is not None:
            stale = warm.proc.read(0).lines  # anything it printed while parked
            if stale:
                log.warning("warm_cli_stale_output_dropped", lines=len(stale))
            return CliUse(warm.proc, warm.tmpdir, warm.tree_id, wanted, warm=True)
        if reason is None:
            reason = _elsewhere(ctx, request.job.session_id)
    # A private TMPDIR per CLI: its sockets and scratch files go with it.
    tmpdir = tempfile.mkdtemp(prefix=f"claude-queue-{run_id[:12]}-")
    if "TMPDIR" not in settings.extra_env:
        command = dataclasses.replace(command, env={**command.env, "TMPDIR": tmpdir})
    proc = CliProcess(
        command,
        run_id=run_id,
        max_line_bytes=settings.max_line_bytes,
        stderr_tail_bytes=settings.stderr_tail_bytes,
        exec_prefix=ctx.exec_prefix,
        nice=settings.cli_nice,
    )
    return CliUse(proc, tmpdir, run_id, wanted, cold_reason=reason)


def _elsewhere(ctx: WorkerContext, session_id: str) -> ColdReason | None:
    """`busy` if another worker advertises the session warm: the run did not reach it."""
    try:
        owner = ctx.store.warm_owner(session_id)
    except redis.RedisError:
        return None
    return ColdReason.BUSY if owner and owner != ctx.worker_name else None


def may_park(seen: RunObservations, cancel: CancelState) -> bool:
    """Only a run that ended normally (a result, no cancel, timeout or failure of ours)."""
    return (
        bool(seen.results)
        and not cancel.is_set()
        and seen.timeout_reason is None
        and seen.failure is None
        and not seen.killed_after_result
        and seen.claude_session_id is not None
    )


def park(
    ctx: WorkerContext, use: CliUse, session_id: str, token: str, seen: RunObservations
) -> None:
    """Hand the idle CLI to the pool for the session's next run."""
    if ctx.warm is None or seen.claude_session_id is None:
        return
    ctx.warm.park(
        WarmCli(
            session_id=session_id,
            proc=use.proc,
            tree_id=use.tree_id,
            fingerprint=use.fingerprint,
            token=int(token),
            claude_session_id=seen.claude_session_id,
            tmpdir=use.tmpdir,
        )
    )
    use.parked = True
    try:
        # Before the run leaves `running`: no worker's orphan sweep may take it for a leftover.
        ctx.store.note_warm_trees(ctx.warm.trees())
    except redis.RedisError as exc:
        log.warning("warm_tree_not_recorded", error=str(exc))
