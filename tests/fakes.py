"""FakeRunStore: the store's sync face in memory, so runner logic runs without Redis.

It follows the scripts in shared/runstore/scripts.py (claim in submit order behind
one lease, fenced and index-idempotent appends, cancel, force_finish);
tests/store/test_fake_store.py runs the same scenarios against it and a real
Redis, so the two cannot drift apart. Faults are programmed per append: Redis
unreachable (nothing written) or the reply lost (written, then the error).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import redis

from shared.control import CancelRequest
from shared.encode import encode_body, seq_prefix
from shared.events import Envelope, Event, PermissionRequestData, RunStatus
from shared.runstore import (
    REPLAY_PAGE,
    AnswerOutcome,
    Appended,
    Busy,
    CancelOutcome,
    Claimed,
    ClaimResult,
    Condition,
    Decision,
    Deleted,
    FinishCondition,
    HeldRun,
    NewRun,
    OwnedBy,
    RunRecord,
    RunState,
    RunStore,
    SessionInfo,
    Skip,
    Submitted,
    Waiting,
)
from shared.settings import Settings
from worker.context import WorkerContext
from worker.publisher import Publisher


class Fault(Enum):
    """What the next append meets."""

    DOWN = "down"  # Redis unreachable: nothing is written, ConnectionError
    REPLY_LOST = "reply_lost"  # written, then the connection drops before the reply


@dataclass(frozen=True, slots=True)
class AppendCall:
    """One append as the store received it."""

    session_id: str
    run_id: str
    token: str
    first_index: int
    bodies: tuple[str | bytes, ...]
    final_status: RunStatus | None


@dataclass(slots=True)
class FakeRun:
    session_id: str
    run_id: str
    state: RunState = RunState.QUEUED
    owner: str | None = None
    worker: str | None = None
    final_status: str | None = None
    started_at: float | None = None
    published_index: int = 0
    pid: tuple[int, int] | None = None


@dataclass(slots=True)
class _Session:
    pending: list[str] = field(default_factory=list)
    lease: str | None = None
    fence: int = 0
    log: list[str] = field(default_factory=list)  # envelopes, as Redis holds them
    cancel_flags: dict[str, float] = field(default_factory=dict)  # run id -> grace_s
    waiters: set[str] = field(default_factory=set)  # runs whose worker's wait marker lives


class FakeRunStore(RunStore):
    """RunStore in memory (sync face). Operations it does not model raise NotImplementedError."""

    def __init__(self, settings: Settings | None = None) -> None:
        # A client with nowhere to connect: nothing here may reach a real Redis.
        nowhere = redis.Redis(unix_socket_path="/nonexistent/fake-run-store.sock")
        super().__init__(nowhere, settings or Settings(key_prefix="fake"))
        self.runs: dict[str, FakeRun] = {}
        self._sessions: dict[str, _Session] = {}
        self.faults: deque[Fault] = deque()
        self.appends: list[AppendCall] = []
        self.control_messages: list[CancelRequest] = []
        # run id -> request id -> the request, and its one decision
        self.approvals: dict[str, dict[str, PermissionRequestData]] = {}
        self.decided: dict[str, dict[str, Decision]] = {}

    def _session(self, session_id: str) -> _Session:
        return self._sessions.setdefault(session_id, _Session())

    def _write(self, session_id: str, body: str | bytes) -> int:
        log = self._session(session_id).log
        text = body.decode() if isinstance(body, bytes) else body  # as Redis takes either
        log.append(f'{{"seq":{len(log) + 1},{text}')
        return len(log)

    # -- test helpers ----------------------------------------------------------

    def add_run(self, session_id: str, run_id: str) -> None:
        """A queued run at the end of its session's pending list (submit without RQ)."""
        self.runs[run_id] = FakeRun(session_id, run_id)
        self._session(session_id).pending.append(run_id)

    def running_run(self, session_id: str, run_id: str) -> str:
        """Add a run and claim it; returns its fencing token."""
        self.add_run(session_id, run_id)
        claim = self.claim(session_id, run_id, worker="fake-worker", host="fake-host")
        assert isinstance(claim, Claimed), claim
        return claim.token

    def expire_lease(self, session_id: str) -> None:
        """As if the lease TTL passed without a renewal."""
        self._session(session_id).lease = None

    def expire_wait_marker(self, session_id: str, run_id: str) -> None:
        """As if the worker waiting with this run stopped renewing its marker."""
        self._session(session_id).waiters.discard(run_id)

    def log_entries(self, session_id: str) -> list[str]:
        """The session log as Redis would hold it: envelope JSON, seq first."""
        return list(self._session(session_id).log)

    def envelopes(self, session_id: str) -> list[Envelope]:
        """Everything logged for the session, in seq order."""
        return [Envelope.from_json(raw) for raw in self._session(session_id).log]

    # -- producers -------------------------------------------------------------

    def submit(self, run: NewRun, *, reject_if_busy: bool = False) -> Submitted | Busy:
        if reject_if_busy and self._session(run.session_id).pending:
            return Busy()
        self.add_run(run.session_id, run.run_id)
        body = encode_body(run.session_id, run.run_id, run.request.submitted_at, run.queued)
        return Submitted(queued_seq=self._write(run.session_id, body))

    def cancel(
        self, session_id: str, run_id: str, *, reason: str, grace_s: float = 0.0
    ) -> CancelOutcome:
        run = self.runs.get(run_id)
        if run is None or run.session_id != session_id:
            return CancelOutcome.NOTHING_TO_CANCEL
        if run.state is RunState.FINISHED:
            return CancelOutcome.ALREADY_FINISHED
        # The real call's ARGV ends: control message, interrupted body, finished body, grace.
        *_, control, interrupted, finished, _grace = self.calls.cancel(
            session_id, run_id, reason=reason, now=time.time(), grace_s=grace_s
        ).args
        self._session(session_id).cancel_flags[run_id] = grace_s
        if run.state is RunState.RUNNING:
            self.control_messages.append(CancelRequest.model_validate_json(str(control)))
            return CancelOutcome.CANCELLED_RUNNING
        self._finish(run, RunStatus.INTERRUPTED.value)
        for body in (interrupted, finished):
            self._write(session_id, str(body))
        return CancelOutcome.CANCELLED_QUEUED

    def pending_runs(self, session_id: str) -> list[str]:
        return list(self._session(session_id).pending)

    def current_run(self, session_id: str) -> str | None:
        pending = self._session(session_id).pending
        return pending[0] if pending else None

    # -- reading logs ----------------------------------------------------------

    def replay_page(
        self, session_id: str, after: int, upto: int | None = None, count: int = REPLAY_PAGE
    ) -> list[Envelope]:
        page = [e for e in self.envelopes(session_id) if e.seq > after]
        return [e for e in page if upto is None or e.seq <= upto][:count]

    def replay(
        self, session_id: str, after: int = 0, upto: int | None = None
    ) -> Iterator[Envelope]:
        yield from self.replay_page(session_id, after, upto, count=10**9)

    def last_seq(self, session_id: str) -> int | None:
        log = self._sessions.get(session_id)
        return len(log.log) if log is not None and log.log else None

    # -- workers ---------------------------------------------------------------

    def claim(self, session_id: str, run_id: str, *, worker: str, host: str) -> ClaimResult:
        del host
        run = self.runs.get(run_id)
        session = self._session(session_id)
        if run is not None and run.state is not RunState.QUEUED:
            session.waiters.discard(run_id)
            return Skip(state=run.state)
        if run is None:  # a job placed in the queue without a producer
            self.add_run(session_id, run_id)
            run = self.runs[run_id]
        head = session.pending[0] if session.pending else None
        if head != run_id or session.lease is not None:
            session.waiters.add(run_id)
            return Waiting(head=head)
        session.waiters.discard(run_id)
        session.fence += 1
        token = str(session.fence)
        session.lease = token
        run.state, run.owner, run.worker = RunState.RUNNING, token, worker
        run.started_at = time.time()
        return Claimed(token=token)

    def renew(self, session_id: str, run_id: str, token: str) -> bool:
        run = self.runs.get(run_id)
        lease = self._session(session_id).lease
        return lease == token and run is not None and run.state is RunState.RUNNING

    def append(
        self,
        session_id: str,
        run_id: str,
        *,
        token: str,
        first_index: int,
        bodies: Sequence[str | bytes],
        final_status: RunStatus | None = None,
        touch: bool = True,
        now: float | None = None,
        seq_hint: int = 0,
    ) -> Appended:
        del touch, now
        if seq_hint:  # as the script reads them: each body behind its expected seq
            bodies = [_unprefixed(body, seq_hint + i) for i, body in enumerate(bodies)]
        self.appends.append(
            AppendCall(session_id, run_id, token, first_index, tuple(bodies), final_status)
        )
        fault = self.faults.popleft() if self.faults else None
        if fault is Fault.DOWN:
            raise redis.ConnectionError("fake store: Redis is unreachable")
        written = self._append(session_id, run_id, token, first_index, bodies, final_status)
        if fault is Fault.REPLY_LOST:
            raise redis.ConnectionError("fake store: the connection dropped before the reply")
        return written

    def _append(
        self,
        session_id: str,
        run_id: str,
        token: str,
        first_index: int,
        bodies: Sequence[str | bytes],
        final_status: RunStatus | None,
    ) -> Appended:
        run = self.runs.get(run_id)
        if run is None or run.owner != token:
            return Appended(accepted=False)
        last = run.published_index
        if run.state is not RunState.RUNNING:
            # A retried final write whose reply was lost is fine; anything new is refused.
            retried = run.state is RunState.FINISHED and last >= first_index + len(bodies) - 1
            return Appended(accepted=retried)
        if self._session(session_id).lease != token:
            return Appended(accepted=False)
        seq = 0
        for index, body in enumerate(bodies, start=first_index):
            if index > last:
                seq, last = self._write(session_id, body), index
        run.published_index = last
        if final_status is not None:
            self._finish(run, final_status.value)
        return Appended(accepted=True, last_seq=seq)

    def _finish(self, run: FakeRun, final_status: str) -> None:
        session = self._session(run.session_id)
        if session.lease is not None and session.lease == run.owner:
            session.lease = None
        run.state, run.final_status, run.pid = RunState.FINISHED, final_status, None
        if run.run_id in session.pending:
            session.pending.remove(run.run_id)

    def force_finish(
        self,
        session_id: str,
        run_id: str,
        *,
        status: RunStatus,
        condition: FinishCondition,
        closing: Event,
        reason: str,
    ) -> bool:
        run = self.runs.get(run_id)
        if run is None or not self._may_force_finish(run, condition):
            return False
        # The real call's ARGV ends with the closing and finished bodies.
        call = self.calls.force_finish(
            session_id,
            run_id,
            status=status,
            condition=condition,
            closing=closing,
            reason=reason,
            started_at=run.started_at,
            now=time.time(),
        )
        for body in call.args[-2:]:
            self._write(session_id, str(body))
        self._finish(run, status.value)
        return True

    def _may_force_finish(self, run: FakeRun, condition: FinishCondition) -> bool:
        session = self._session(run.session_id)
        if condition is Condition.WAIT_GONE:
            if run.state is not RunState.QUEUED:
                session.waiters.discard(run.run_id)  # claimed or cancelled meanwhile
                return False
            return run.run_id not in session.waiters
        if run.state is not RunState.RUNNING:
            return False
        if isinstance(condition, OwnedBy):
            return condition.worker_name == run.worker
        return session.lease is None  # LEASE_GONE

    def run_record(self, session_id: str, run_id: str) -> RunRecord:
        run = self.runs.get(run_id)
        if run is None or run.session_id != session_id:
            return RunRecord(state=None)
        return RunRecord(state=run.state, final_status=run.final_status, started_at=run.started_at)

    def record_pid(self, session_id: str, run_id: str, pid: int, pid_start: int) -> None:
        self.runs[run_id].pid = (pid, pid_start)

    def cancel_requested(self, session_id: str, run_id: str) -> float | None:
        return self._session(session_id).cancel_flags.get(run_id)

    def open_request(self, session_id: str, run_id: str, request: PermissionRequestData) -> None:
        self.calls.open_request(session_id, run_id, request)  # validates like the real one
        self.approvals.setdefault(run_id, {})[request.request_id] = request

    def decide(
        self,
        session_id: str,
        run_id: str,
        request_id: str,
        decision: Decision,
        *,
        notify: bool = True,
    ) -> AnswerOutcome:
        self.calls.decide(session_id, run_id, request_id, decision, notify=notify)
        run = self.runs.get(run_id)
        if run is None or run.session_id != session_id or run.state is not RunState.RUNNING:
            return AnswerOutcome.RUN_NOT_RUNNING
        if request_id not in self.approvals.get(run_id, {}):
            return AnswerOutcome.UNKNOWN_REQUEST
        decided = self.decided.setdefault(run_id, {})
        if request_id in decided:
            return AnswerOutcome.ALREADY_DECIDED
        decided[request_id] = decision
        return AnswerOutcome.DELIVERED

    def decisions(
        self, session_id: str, run_id: str, request_ids: list[str]
    ) -> dict[str, Decision]:
        decided = self.decided.get(run_id, {})
        return {rid: decided[rid] for rid in request_ids if rid in decided}

    def running_runs(self) -> dict[str, str]:
        running = (run for run in self.runs.values() if run.state is RunState.RUNNING)
        return {run.run_id: run.session_id for run in running}

    def running_session(self, run_id: str) -> str | None:
        return self.running_runs().get(run_id)

    def session_info(self, session_id: str) -> SessionInfo | None:
        raise NotImplementedError("FakeRunStore does not model session listings")

    def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        raise NotImplementedError("FakeRunStore does not model session listings")

    def delete_session(self, session_id: str) -> Deleted | Busy:
        raise NotImplementedError("FakeRunStore does not model session deletion")

    def held_runs(self) -> list[HeldRun]:
        raise NotImplementedError("FakeRunStore does not model waiting workers")


def run_publisher(
    store: FakeRunStore,
    session_id: str = "s",
    run_id: str = "r",
    *,
    max_event_bytes: int = 1 << 20,
    max_buffer_bytes: int = 64 * 1024 * 1024,
) -> Publisher:
    """A publisher for a run just claimed in the fake store, as claim_run builds it."""
    token = store.running_run(session_id, run_id)
    return Publisher(
        store,
        session_id=session_id,
        run_id=run_id,
        token=token,
        max_event_bytes=max_event_bytes,
        max_buffer_bytes=max_buffer_bytes,
    )


def fake_context(store: FakeRunStore, worker_name: str = "fake-worker") -> WorkerContext:
    """A worker context whose every run-record and event write goes to `store`."""
    ctx = WorkerContext(
        settings=store.settings,
        redis=store.redis,  # leads nowhere: what bypasses the store fails loudly
        keys=store.keys,
        worker_name=worker_name,
        host="fake-host",
    )
    # The context builds its store from `redis`; frozen, so swap it the dataclass way.
    object.__setattr__(ctx, "store", store)
    return ctx


def _unprefixed(body: str | bytes, seq: int) -> str | bytes:
    """A body sent with a seq hint, without the prefix the writer put in front of it."""
    prefix = seq_prefix(seq)
    raw = body.encode() if isinstance(body, str) else body
    assert raw.startswith(prefix), f"body {raw[:40]!r} is not prefixed with {prefix!r}"
    return raw[len(prefix) :]
