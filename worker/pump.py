"""The read loop of a run: CLI lines in, events out, until the output ends, a cancel
arrives or a time limit passes.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass

import redis
import structlog

from shared.events import ErrorCode, ErrorData, Event
from shared.jobs import RunRequest
from shared.runstore import RunStore
from shared.settings import Settings
from worker import cliproto
from worker.context import WorkerContext
from worker.errors import error_event
from worker.interaction import Interaction
from worker.outcome import RunObservations
from worker.parser import Parsed, parse_line, stream_event_as_printed
from worker.process import CliProcess, LineTooLong
from worker.publisher import BufferOverflow, LogBudgetExceeded, Publisher

log = structlog.get_logger(__name__)

_CANCEL_FLAG_POLL_S = 1.0


class CancelState:
    """Set from any thread when the run must stop; keeps the first reason.

    A soft cancel (grace_s > 0) first asks the CLI to end its turn; the tree is killed
    at `kill_at` (monotonic) if the turn has not ended by then. A later cancel can only
    bring that time closer, never push it back.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""
        self.kill_at = math.inf
        self.interrupt_sent = False

    def request(self, reason: str, grace_s: float = 0.0) -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self.kill_at = min(self.kill_at, time.monotonic() + max(grace_s, 0.0))
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

    def next(self, *others: float | None) -> float:
        extra = [t for t in others if t is not None]
        return min(self.wall, self.idle, self.result, self.flag_check, *extra)


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


def _cancel_now(cancel: CancelState, proc: CliProcess, now: float, turn_over: bool) -> bool:
    """Should the pump stop and kill? Sends the soft interrupt the first time round."""
    if not cancel.is_set():
        return False
    if now >= cancel.kill_at:
        return True
    if cancel.interrupt_sent and turn_over:
        return False  # the interrupted turn ended: the CLI exits within the result grace
    if not proc.stdin_open:
        return True
    if not cancel.interrupt_sent:
        cancel.interrupt_sent = True
        proc.send(cliproto.interrupt(f"interrupt-{secrets.token_hex(8)}"))
        log.info("soft_interrupt_sent", grace_s=round(cancel.kill_at - now, 3))
    return False


def pump(
    proc: CliProcess,
    publisher: Publisher,
    seen: RunObservations,
    cancel: CancelState,
    request: RunRequest,
    ctx: WorkerContext,
    talk: Interaction,
    *,
    keep_alive: bool = False,
) -> bool:
    """Read until the CLI's output ends, a cancel arrives or a time limit is hit.

    With keep_alive, a turn that ends normally leaves the CLI running with stdin open
    (a warm CLI for the session's next run): True is returned and nothing is killed.
    """
    settings = ctx.settings
    now = time.monotonic()
    due = _Deadlines(
        wall=now + (request.job.timeout_s or settings.default_timeout_s),
        idle=now + settings.idle_timeout_s,
        flag_check=now + _CANCEL_FLAG_POLL_S,
    )
    publisher.limit_run_log(settings.max_run_log_bytes)
    idle_alive = False
    try:
        idle_alive = _pump(proc, publisher, seen, cancel, request, ctx, talk, due, keep_alive)
    finally:
        if not idle_alive:
            proc.kill_tree()
    talk.end()
    return idle_alive


def _pump(
    proc: CliProcess,
    publisher: Publisher,
    seen: RunObservations,
    cancel: CancelState,
    request: RunRequest,
    ctx: WorkerContext,
    talk: Interaction,
    due: _Deadlines,
    keep_alive: bool,
) -> bool:
    settings = ctx.settings
    while True:
        now = time.monotonic()
        was_waiting = talk.waiting
        if was_waiting:
            # Waiting for a person is not idling: moved on before the limits are checked.
            due.idle = now + settings.idle_timeout_s
        turn_over = bool(seen.results)
        if _cancel_now(cancel, proc, now, turn_over) or _time_is_up(now, due, seen, settings):
            return False
        talk.expire(now)
        if now >= due.flag_check:
            due.flag_check = now + _CANCEL_FLAG_POLL_S
            if _cancel_flagged(ctx.store, request, cancel):
                continue
            talk.poll()
        chunk = proc.read(due.next(talk.next_due(), cancel.kill_at) - now)
        talk.take_answers()
        if chunk.lines or was_waiting:
            # Since the answer (if one came during the read), not since the loop's top:
            # else a CLI slower than the rest of the read to act on it was killed as idle.
            due.idle = time.monotonic() + settings.idle_timeout_s
        if not _take_lines(chunk.lines, publisher, seen, talk, cancel, settings.max_line_bytes):
            return False
        turn_ended = bool(seen.results) and due.result == math.inf
        stay = turn_ended and keep_alive and not cancel.is_set() and proc.stdin_open
        if turn_ended and not stay:
            # The turn is over: closing stdin lets the CLI exit; it gets the result grace.
            proc.close_stdin()
            due.result = time.monotonic() + settings.result_grace_s
        try:
            publisher.flush()
        except BufferOverflow as exc:
            seen.failure = (ErrorCode.BUFFER_OVERFLOW, f"Redis was unreachable for too long: {exc}")
            return False
        if stay and not chunk.eof:
            return True  # idle, stdin open: it waits for the session's next prompt
        if chunk.eof:
            # stdout closed; give the CLI the result grace to exit by itself.
            if not _await_exit(proc, settings.result_grace_s, cancel) and seen.results:
                seen.killed_after_result = True
            return False


def _take_lines(
    lines: list[bytes | LineTooLong],
    publisher: Publisher,
    seen: RunObservations,
    talk: Interaction,
    cancel: CancelState,
    max_line_bytes: int,
) -> bool:
    """Parse and queue the lines' events; False once the run's log budget is spent."""
    try:
        for line in lines:
            if isinstance(line, bytes) and (printed := stream_event_as_printed(line)):
                publisher.add(printed)  # nothing in a stream event for `seen` or `talk`
                continue
            parsed = _parse(line, max_line_bytes)
            if parsed.control is not None:
                talk.on_control(parsed.control)
            for event in parsed.events:
                seen.observe(event)
                if cancel.interrupt_sent and _is_result_error(event):
                    # The error result of a turn we interrupted is no failure to report:
                    # the run ends `interrupted` (the `result` event itself still goes out).
                    continue
                publisher.add(event)
    except LogBudgetExceeded as exc:
        # What was queued within the budget still goes out with the closing events.
        seen.failure = (ErrorCode.LOG_BUDGET_EXCEEDED, f"{exc}; the CLI was stopped")
        return False
    return True


def _is_result_error(event: Event) -> bool:
    return isinstance(event.data, ErrorData) and event.data.code is ErrorCode.RESULT_ERROR


def _cancel_flagged(store: RunStore, request: RunRequest, cancel: CancelState) -> bool:
    """Did a cancel leave only its flag (its message was missed)? Then it is requested."""
    grace = flag_set(store, request.job.session_id, request.run_id)
    if grace is None:
        return False
    cancel.request("cancelled by request", grace)
    return True


def flag_set(store: RunStore, session_id: str, run_id: str) -> float | None:
    """The grace of a requested cancel, or None. An unreachable Redis reads as none:
    the CLI keeps running."""
    try:
        return store.cancel_requested(session_id, run_id)
    except redis.RedisError:
        return None


def _await_exit(proc: CliProcess, grace_s: float, cancel: CancelState) -> bool:
    """Give the CLI up to grace_s (never past a cancel's kill time) to exit by itself."""
    deadline = time.monotonic() + grace_s
    while proc.poll() is None:
        remaining = min(deadline, cancel.kill_at) - time.monotonic()
        if remaining <= 0:
            return False
        proc.read(min(remaining, 0.1))
    return True


def _parse(line: bytes | LineTooLong, max_line_bytes: int) -> Parsed:
    if isinstance(line, LineTooLong):
        return Parsed(
            [
                error_event(
                    ErrorCode.LINE_TOO_LONG,
                    f"the CLI printed a {line.size}-byte line, over the {max_line_bytes}-byte "
                    "limit (CLAUDE_QUEUE_MAX_LINE_BYTES); it was dropped",
                    bytes=line.size,
                )
            ]
        )
    parsed = parse_line(line)
    if parsed.skipped and parsed.skipped.startswith("unknown"):
        log.info("cli_line_skipped", why=parsed.skipped)
    return parsed
