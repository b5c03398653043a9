"""The read loop of a run: CLI lines in, events out, until the output ends, a cancel
arrives or a time limit passes.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import redis
import structlog

from shared.events import ErrorCode, Event
from shared.jobs import RunRequest
from shared.runstore import RunStore
from shared.settings import Settings
from worker.context import WorkerContext
from worker.errors import error_event
from worker.outcome import RunObservations
from worker.parser import parse_line
from worker.process import CliProcess, LineTooLong
from worker.publisher import BufferOverflow, LogBudgetExceeded, Publisher

log = structlog.get_logger(__name__)

_CANCEL_FLAG_POLL_S = 1.0


class CancelState:
    """Set once, from any thread, when the run must stop; keeps the first reason."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


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


def pump(
    proc: CliProcess,
    publisher: Publisher,
    seen: RunObservations,
    cancel: CancelState,
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
    publisher.limit_run_log(settings.max_run_log_bytes)
    while not cancel.is_set():
        now = time.monotonic()
        if _time_is_up(now, due, seen, settings):
            break
        if now >= due.flag_check:
            due.flag_check = now + _CANCEL_FLAG_POLL_S
            if flag_set(ctx.store, request.job.session_id, request.run_id) is not None:
                cancel.request("cancelled by request")
                break
        chunk = proc.read(due.next() - now)
        if chunk.lines:
            due.idle = time.monotonic() + settings.idle_timeout_s
        try:
            for line in chunk.lines:
                for event in _events_of(line, settings.max_line_bytes):
                    seen.observe(event)
                    publisher.add(event)
        except LogBudgetExceeded as exc:
            # What was queued within the budget still goes out with the closing events.
            seen.failure = (ErrorCode.LOG_BUDGET_EXCEEDED, f"{exc}; the CLI was stopped")
            break
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


def flag_set(store: RunStore, session_id: str, run_id: str) -> float | None:
    """The grace of a requested cancel, or None. An unreachable Redis reads as none:
    the CLI keeps running."""
    try:
        return store.cancel_requested(session_id, run_id)
    except redis.RedisError:
        return None


def _await_exit(proc: CliProcess, grace_s: float, cancel: CancelState) -> bool:
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
            error_event(
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
