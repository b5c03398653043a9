"""Execute one run: claim it, spawn the CLI, pump its lines through parser and
publisher, honour cancel and timeouts, and always end with exactly one `finished`.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass

import redis
import structlog

from shared.control import CancelRequest
from shared.events import (
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    RunStatus,
    StartedData,
)
from shared.jobs import PromptJob, RunRequest
from shared.settings import Settings
from worker import session
from worker.claim import claim_run
from worker.command import UnknownProfileError, build_command
from worker.context import WorkerContext
from worker.control import ControlListener
from worker.lease import LeaseKeeper
from worker.outcome import RunObservations, final_events
from worker.parser import parse_line
from worker.process import CliProcess, LineTooLong
from worker.proctree import enable_subreaper
from worker.publisher import BufferOverflow, OwnershipLost, Publisher

log = structlog.get_logger(__name__)

_CANCEL_FLAG_POLL_S = 1.0
_FINISHED_MARK = b'"type":"finished"'


class _CancelState:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def _error(code: ErrorCode, message: str, **detail: object) -> Event:
    return Event(type=EventType.ERROR, data=ErrorData(code=code, message=message, detail=detail))


def _fail_now(publisher: Publisher, code: ErrorCode, message: str, started: float) -> RunStatus:
    finished = FinishedData(
        status=RunStatus.FAILED, duration_s=round(time.monotonic() - started, 6), reason=message
    )
    publisher.publish(
        _error(code, message),
        Event(type=EventType.FINISHED, data=finished),
        final_status=RunStatus.FAILED,
    )
    return RunStatus.FAILED


def claim_and_fail(
    ctx: WorkerContext,
    *,
    session_id: str,
    run_id: str,
    code: ErrorCode,
    message: str,
    started: float,
) -> None:
    """End a run that cannot start (e.g. an invalid payload) with error + finished."""
    claimed = claim_run(ctx, session_id, run_id)
    if claimed is not None:
        _fail_now(claimed[0], code, message, started)


def execute_run(request: RunRequest, ctx: WorkerContext) -> RunStatus | None:
    """Run one request to its end. None when this delivery was not ours to run."""
    started = time.monotonic()
    claimed = claim_run(ctx, request.job.session_id, request.run_id)
    if claimed is None:
        return None
    publisher, token = claimed
    try:
        return _run_cli(request, ctx, publisher, token, started)
    except OwnershipLost:
        log.warning("run_fenced_off", detail="the session lease passed on; events refused")
        return None
    except Exception as exc:
        # A bug of ours must still end the run: error + finished, then re-raise for RQ.
        log.exception("run_crashed")
        # If even that fails, the reaper ends the run once its lease expires.
        with contextlib.suppress(OwnershipLost, redis.RedisError):
            _fail_now(publisher, ErrorCode.INTERNAL, f"the worker failed: {exc!r}", started)
        raise


def _run_cli(
    request: RunRequest, ctx: WorkerContext, publisher: Publisher, token: str, started: float
) -> RunStatus:
    job, run_id, settings = request.job, request.run_id, ctx.settings
    plan = session.plan_resume(ctx.redis, ctx.keys, job, _cli_env(ctx), os.getcwd())
    if plan.failure is not None:
        return _fail_now(publisher, *plan.failure, started)
    if problem := session.cwd_problem(plan.cwd):
        return _fail_now(publisher, ErrorCode.CWD_NOT_FOUND, problem, started)
    if plan.notice is not None:
        publisher.publish(_error(*plan.notice))
    try:
        command = build_command(
            request,
            settings,
            worker_name=ctx.worker_name,
            base_env=os.environ,
            resume_claude_session_id=plan.resume_id,
            cwd=plan.cwd,
        )
    except UnknownProfileError as exc:
        return _fail_now(publisher, ErrorCode.UNKNOWN_PROFILE, str(exc), started)

    enable_subreaper()
    proc = CliProcess(
        command,
        run_id=run_id,
        max_line_bytes=settings.max_line_bytes,
        stderr_tail_bytes=settings.stderr_tail_bytes,
    )
    cancel = _CancelState()

    def on_cancel(message: CancelRequest) -> None:
        cancel.request(message.reason)
        proc.kill_tree()
        proc.wake()

    listener = ControlListener(
        ctx.redis,
        ctx.keys.control(job.session_id, run_id),
        run_id=run_id,
        current_pid=lambda: proc.pid,
        on_cancel=on_cancel,
    )
    run_key = ctx.keys.run(job.session_id, run_id)
    lease = LeaseKeeper(
        ctx.redis,
        lease_key=ctx.keys.lease(job.session_id),
        run_key=run_key,
        token=token,
        ttl_s=settings.lease_ttl_s,
        renew_s=settings.lease_renew_s,
        on_lost=lambda: on_cancel(
            CancelRequest(session_id=job.session_id, run_id=run_id, reason="lease lost")
        ),
    )
    lease.start()
    listener.start()  # subscribed before spawn: a cancel sent from here on is heard
    seen = RunObservations()
    try:
        try:
            proc.spawn()
        except OSError as exc:
            message = (
                f"cannot start the Claude CLI {settings.claude_bin!r}: {exc.strerror or exc}. "
                "Install it or point CLAUDE_QUEUE_CLAUDE_BIN at it."
            )
            return _fail_now(publisher, ErrorCode.CLI_NOT_FOUND, message, started)
        ctx.redis.hset(run_key, mapping={"pid": proc.pid, "pid_start": proc.start_ticks or 0})
        publisher.publish(
            Event(
                type=EventType.STARTED,
                data=StartedData(worker=ctx.worker_name, host=ctx.host, pid=proc.pid),
            )
        )
        # A cancel that landed between dequeue and spawn left only the flag behind.
        if _flag_set(ctx.redis, ctx.keys.cancel_flag(job.session_id, run_id)):
            on_cancel(CancelRequest(session_id=job.session_id, run_id=run_id))
        _pump(proc, publisher, seen, cancel, request, ctx)
    finally:
        listener.stop()
        lease.stop()
        proc.kill_tree()
        exit_code = proc.wait() if proc.pid else None
        proc.close()
    if cancel.is_set():
        seen.cancel_reason = cancel.reason or "cancelled"
    stderr_tail = proc.stderr_tail()
    closing: list[Event] = []
    if plan.resume_id and exit_code and session.RESUME_NOT_FOUND in stderr_tail:
        closing.append(_resume_failed(job, plan.resume_id, ctx))
    if seen.claude_session_id:
        session.remember(
            ctx.redis,
            ctx.keys,
            settings,
            job=job,
            run_id=run_id,
            cwd=plan.cwd,
            claude_session_id=seen.claude_session_id,
            env=command.env,
        )
    events, status = final_events(
        seen,
        exit_code=exit_code,
        duration_s=time.monotonic() - started,
        stderr_tail=stderr_tail,
    )
    publisher.publish(*closing, *events, final_status=status)
    log.info("run_finished", status=status.value, exit_code=exit_code, events=publisher.published)
    return status


def _resume_failed(job: PromptJob, resume_id: str, ctx: WorkerContext) -> Event:
    message = f"the CLI could not resume conversation {resume_id}: no transcript was found"
    if job.resume_policy == "start_fresh":
        session.forget_conversation(ctx.redis, ctx.keys, job.session_id)
        message += "; the session's next run starts a fresh conversation (resume_policy)"
    return _error(ErrorCode.RESUME_FAILED, message, claude_session_id=resume_id)


def _cli_env(ctx: WorkerContext) -> dict[str, str]:
    """The environment the CLI will see (HOME and CLAUDE_CONFIG_DIR locate transcripts)."""
    return {**os.environ, **ctx.settings.extra_env}


@dataclass(slots=True)
class _Deadlines:
    """The monotonic times at which the pump must act."""

    wall: float
    idle: float
    flag_check: float
    result: float = math.inf

    def next(self) -> float:
        return min(self.wall, self.idle, self.result, self.flag_check)


def _time_is_up(now: float, due: _Deadlines, seen: RunObservations, settings: Settings) -> bool:
    """Record why the run must stop now, if a limit has passed."""
    if now >= due.wall:
        seen.timeout_reason = "the run exceeded its time limit (timeout_s)"
    elif now >= due.idle:
        seen.timeout_reason = (
            f"the CLI printed nothing for {settings.idle_timeout_s:g} s (idle_timeout_s)"
        )
    elif now >= due.result:
        # The CLI printed its final result but did not exit: a known CLI hang.
        seen.killed_after_result = True
        log.warning("cli_lingered_after_result", grace_s=settings.result_grace_s)
    else:
        return False
    return True


def _pump(
    proc: CliProcess,
    publisher: Publisher,
    seen: RunObservations,
    cancel: _CancelState,
    request: RunRequest,
    ctx: WorkerContext,
) -> None:
    """Read until the CLI's output ends, a cancel arrives or a time limit is hit."""
    settings = ctx.settings
    now = time.monotonic()
    due = _Deadlines(
        wall=now + (request.job.timeout_s or settings.default_timeout_s),
        idle=now + settings.idle_timeout_s,
        flag_check=now + _CANCEL_FLAG_POLL_S,
    )
    flag_key = ctx.keys.cancel_flag(request.job.session_id, request.run_id)
    while not cancel.is_set():
        now = time.monotonic()
        if _time_is_up(now, due, seen, settings):
            break
        if now >= due.flag_check:
            due.flag_check = now + _CANCEL_FLAG_POLL_S
            if _flag_set(ctx.redis, flag_key):
                cancel.request("cancelled by request")
                break
        chunk = proc.read(due.next() - now)
        if chunk.lines:
            due.idle = time.monotonic() + settings.idle_timeout_s
        for line in chunk.lines:
            for event in _events_of(line, settings.max_line_bytes):
                seen.observe(event)
                publisher.add(event)
        if seen.results and due.result == math.inf:
            due.result = time.monotonic() + settings.result_grace_s
        try:
            publisher.flush()
        except BufferOverflow as exc:
            seen.failure = (ErrorCode.BUFFER_OVERFLOW, f"Redis was unreachable for too long: {exc}")
            break
        if chunk.eof:
            # stdout closed; give the CLI the result grace to exit by itself.
            if not _await_exit(proc, settings.result_grace_s, cancel) and seen.results:
                seen.killed_after_result = True
            break
    proc.kill_tree()


def _flag_set(client: redis.Redis, key: str) -> bool:
    """Is the cancel flag set? An unreachable Redis reads as no: the CLI keeps running."""
    try:
        return bool(client.exists(key))
    except redis.RedisError:
        return False


def _await_exit(proc: CliProcess, grace_s: float, cancel: _CancelState) -> bool:
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and not cancel.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        proc.read(min(remaining, 0.1))
    return True


def _events_of(line: bytes | LineTooLong, max_line_bytes: int) -> list[Event]:
    if isinstance(line, LineTooLong):
        return [
            _error(
                ErrorCode.LINE_TOO_LONG,
                f"the CLI printed a {line.size}-byte line, over the {max_line_bytes}-byte "
                "limit (CLAUDE_QUEUE_MAX_LINE_BYTES); it was dropped",
                bytes=line.size,
            )
        ]
    parsed = parse_line(line)
    if parsed.skipped and parsed.skipped.startswith("unknown"):
        log.info("cli_line_skipped", why=parsed.skipped)
    return parsed.events
