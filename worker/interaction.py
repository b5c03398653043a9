"""A run's conversation with its CLI after the prompt: permission requests, their
answers, and their deadlines. The I/O shell around worker.approvals (pure).

Only the pump's thread calls in here, except `announce`, which the control listener
calls from its own thread to say "this request was answered".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

import redis
import structlog

from shared.events import ErrorCode, Event, EventType
from shared.runstore import AnswerOutcome, Decision, RunStore
from worker import cliproto
from worker.approvals import RUN_ENDED, Approvals, timed_out
from worker.errors import error_event
from worker.process import CliProcess
from worker.publisher import Publisher

log = structlog.get_logger(__name__)

UNRECORDED = Decision(
    behavior="deny",
    message="The permission request could not be recorded (Redis was unreachable), so "
    "nobody could answer it: denied.",
)


class Interaction:
    """Permission requests of one run: asked by the CLI, decided once, answered on stdin."""

    def __init__(
        self,
        proc: CliProcess,
        publisher: Publisher,
        store: RunStore,
        *,
        session_id: str,
        run_id: str,
        timeout_s: float,
        max_request_bytes: int = 256 * 1024,
    ) -> None:
        self._proc = proc
        self._publisher = publisher
        self._store = store
        self._session_id = session_id
        self._run_id = run_id
        self._approvals = Approvals(timeout_s, max_request_bytes)
        self._inbox: deque[str] = deque()
        self._inbox_lock = threading.Lock()

    @property
    def waiting(self) -> bool:
        """Is the CLI waiting for an answer (the run is not idle then)?"""
        return bool(self._approvals)

    def next_due(self) -> float | None:
        return self._approvals.next_due()

    def announce(self, request_id: str) -> None:
        """From any thread: a decision for this request may have been recorded."""
        with self._inbox_lock:
            self._inbox.append(request_id)
        self._proc.wake()

    def on_control(self, request: cliproto.ControlRequest) -> None:
        """The CLI asked something: record a tool request and publish it; refuse others."""
        if isinstance(request, cliproto.OtherControlRequest):
            self._proc.send(cliproto.unsupported(request.request_id, request.subtype))
            why = f" ({request.problem})" if request.problem else ""
            message = (
                f"the CLI sent a {request.subtype!r} control request{why}; claude-queue "
                "does not handle it and refused it"
            )
            self._publisher.add(error_event(ErrorCode.CLI_ERROR, message))
            return
        data = self._approvals.ask(request, now=time.time(), monotonic=time.monotonic())
        if data is None:
            return  # the same request id again: it is already pending
        self._publisher.add(Event(type=EventType.PERMISSION_REQUEST, data=data))
        try:
            # Recorded before the event is flushed, so whoever sees it can answer it.
            self._store.open_request(self._session_id, self._run_id, data)
        except redis.RedisError as exc:
            log.warning("permission_request_not_recorded", error=str(exc))
            self._resolve(data.request_id, UNRECORDED)
            return
        log.info("permission_requested", request_id=data.request_id, tool=data.tool_name)

    def take_answers(self) -> None:
        """Apply the decisions of requests the control listener announced."""
        with self._inbox_lock:
            announced = set(self._inbox)
            self._inbox.clear()
        pending = [rid for rid in self._approvals.pending_ids() if rid in announced]
        if pending:
            self._apply_recorded(pending)

    def poll(self) -> None:
        """Look for decisions of every pending request (a control message may be lost)."""
        if self._approvals:
            self._apply_recorded(self._approvals.pending_ids())

    def expire(self, monotonic: float) -> None:
        """Deny each request past its deadline, unless an answer was recorded first."""
        for request_id in self._approvals.expired(monotonic):
            decision = timed_out(self._approvals.timeout_s)
            try:
                outcome = self._store.decide(
                    self._session_id, self._run_id, request_id, decision, notify=False
                )
                if outcome is AnswerOutcome.ALREADY_DECIDED:
                    recorded = self._store.decisions(self._session_id, self._run_id, [request_id])
                    decision = recorded.get(request_id, decision)
            except redis.RedisError as exc:
                log.warning("permission_timeout_not_recorded", error=str(exc))
            self._resolve(request_id, decision)

    def end(self) -> None:
        """The run is ending: every request still pending is decided `run_ended`."""
        for request_id in self._approvals.pending_ids():
            # If Redis is away the record expires with the run; the event is what counts.
            with contextlib.suppress(redis.RedisError):
                self._store.decide(
                    self._session_id, self._run_id, request_id, RUN_ENDED, notify=False
                )
            resolved = self._approvals.resolve(request_id, RUN_ENDED)
            if resolved is not None:
                self._publisher.add(resolved.event, closing=True)

    def _apply_recorded(self, request_ids: list[str]) -> None:
        try:
            recorded = self._store.decisions(self._session_id, self._run_id, request_ids)
        except redis.RedisError as exc:
            log.warning("permission_decisions_unreadable", error=str(exc))
            return
        for request_id, decision in recorded.items():
            self._resolve(request_id, decision)

    def _resolve(self, request_id: str, decision: Decision) -> None:
        resolved = self._approvals.resolve(request_id, decision)
        if resolved is None:
            return
        # Queued before the CLI can act on it, so it comes first in the log. `closing`:
        # never refused by the log budget (its request was counted; one per request).
        self._publisher.add(resolved.event, closing=True)
        self._proc.send(resolved.stdin)
        log.info(
            "permission_decided",
            request_id=request_id,
            behavior=decision.behavior,
            reason=decision.reason.value,
        )
