"""RunStore: the store's operations over a sync redis client. I/O only; see calls.py."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis

from shared import rqjobs
from shared.events import Envelope, Event, PermissionRequestData, RunStatus
from shared.rqjobs import SubmitQueues
from shared.runstore import calls, placing, replies
from shared.runstore.calls import DELETE_BATCH, REPLAY_PAGE, RunCalls
from shared.runstore.model import (
    AnswerOutcome,
    Appended,
    Busy,
    CancelOutcome,
    ClaimResult,
    Decision,
    Deleted,
    FinishCondition,
    NewRun,
    OpenRequest,
    RunRecord,
    SessionInfo,
    Submitted,
)
from shared.runstore.registry import WorkerRegistry
from shared.runstore.scripting import ScriptRunner
from shared.settings import Settings


class RunStore(WorkerRegistry):
    """Every read and write of run and session records, for sync code (Client, workers)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.calls = RunCalls.from_settings(settings)
        self.keys = self.calls.keys
        self._reader: redis.Redis | None = None
        self.scripts = ScriptRunner(client, settings)
        self._queues: SubmitQueues | None = None

    # -- producers ---------------------------------------------------------

    def submit(self, run: NewRun, *, reject_if_busy: bool = False) -> Submitted | Busy:
        """Enqueue the RQ job and write the `queued` event in one MULTI/EXEC.

        The job goes to the own queue of the worker advertising the session's CLI as
        warm and idle, if one does, else to the shared queue. The advertisement is
        watched: a worker that withdraws it (it became busy) before the EXEC makes us
        look again, so a run never lands behind a worker after it moved its queue away.
        With reject_if_busy, nothing is queued (Busy) while the session has a run pending.
        Priority and delay are placed behind the session's waiting runs (placing.py).
        """
        if self._queues is None:
            self._queues = SubmitQueues(self.settings.queue_name, self.redis)
        k, session_id, queue_name = self.keys, run.session_id, self.settings.queue_name
        pending, owner = k.pending(session_id), k.warm_owner(session_id)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(owner, pending)  # type: ignore[no-untyped-call]
                    waiting = cast(list[Any], pipe.lrange(pending, 0, -1))
                    if reject_if_busy and waiting:
                        return Busy()
                    fields = list(placing.RECORD_FIELDS)
                    records = [
                        cast(list[Any], pipe.hmget(placing.record_key(k, session_id, m), fields))
                        for m in waiting
                    ]
                    where = placing.placement(run, records, now=time.time())
                    routed = placing.routed_worker(pipe.get(owner)) if where.may_route else None
                    queue = self._queues.get(routed, placing.list_name(queue_name, where))
                    placed = placing.placed(run, where)
                    placing.enqueue(queue, placed, pipe, where)
                    self.scripts.queue(self.calls.submit(placed), pipe)
                    record, written = placing.record_writes(k, placed, where)
                    pipe.hset(record, mapping=written)  # type: ignore[arg-type]
                    return Submitted(queued_seq=int(pipe.execute()[-2]))
                except redis.WatchError:
                    continue  # the session or its warm owner changed while we looked

    def cancel(
        self, session_id: str, run_id: str, *, reason: str, grace_s: float = 0.0
    ) -> CancelOutcome:
        """Cancel a queued run now, or flag a running one and tell its owner (one script).

        A run cancelled while queued also leaves the RQ queue, its job marked canceled;
        if a worker took it meanwhile, that worker skips the run instead.
        """
        call = self.calls.cancel(
            session_id, run_id, reason=reason, now=time.time(), grace_s=grace_s
        )
        outcome = replies.cancel_outcome(self.scripts.run(call))
        if outcome is CancelOutcome.CANCELLED_QUEUED and self._withdraw_job(run_id):
            with self.redis.pipeline() as pipe:
                self.calls.canceled_job(pipe, run_id)
                pipe.execute()
        return outcome

    def _withdraw_job(self, run_id: str) -> bool:
        """Take a cancelled run's job out of every list (priority) or registry (delayed)
        it waits in; True if one held it."""
        with self.redis.pipeline(transaction=False) as pipe:
            for command in rqjobs.job_removals(self.settings.queue_name, run_id):
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return any(int(n) for n in pipe.execute())

    def pending_runs(self, session_id: str) -> list[str]:
        """The session's queued and running runs, in submit order."""
        return replies.run_ids(
            cast(list[Any], self.redis.lrange(self.keys.pending(session_id), 0, -1))
        )

    def current_run(self, session_id: str) -> str | None:
        """The run heading the session's pending list (running, or next to run)."""
        return replies.head_run(self.redis.lindex(self.keys.pending(session_id), 0))

    # -- reading logs ------------------------------------------------------

    def _log_reader(self) -> redis.Redis:
        """A client on the same connection pool whose XRANGE replies stay raw lists:
        replies.envelopes reads them directly, where redis-py would first build a dict
        per entry (~20 ms of a 10,000-event replay). Made on first use."""
        if self._reader is None:
            pool = getattr(self.redis, "connection_pool", None)
            if pool is None:  # a stand-in client (tests)
                return self.redis
            self._reader = redis.Redis(connection_pool=pool)
            self._reader.set_response_callback("XRANGE", replies.raw_reply)
        return self._reader

    def replay_page(
        self, session_id: str, after: int, upto: int | None = None, count: int = REPLAY_PAGE
    ) -> list[Envelope]:
        """Up to `count` logged events with after < seq <= upto (no upper bound: None)."""
        start, end = calls.replay_range(after, upto)
        entries = self._log_reader().xrange(self.keys.log(session_id), start, end, count=count)
        return replies.envelopes(cast(list[Any], entries))

    def replay(
        self, session_id: str, after: int = 0, upto: int | None = None
    ) -> Iterator[Envelope]:
        """Every logged event with after < seq <= upto, page by page."""
        while True:
            page = self.replay_page(session_id, after, upto)
            yield from page
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].seq

    def last_seq(self, session_id: str) -> int | None:
        """The session's last seq; None once the session was deleted or expired."""
        return replies.seq(self.redis.get(self.keys.seq(session_id)))

    # -- sessions ----------------------------------------------------------

    def session_info(self, session_id: str) -> SessionInfo | None:
        """What is known about one session, or None if it has no keys at all."""
        calls.require_session_id(session_id)
        pipe = self.redis.pipeline(transaction=False)
        for command in self.calls.session_reads(session_id):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        read = pipe.execute()
        head = replies.pending_head(read)
        status = (
            None if head is None else self.redis.hget(self.keys.run(session_id, head), "status")
        )
        return replies.session_info(session_id, read, status)

    def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        """Most recently active sessions first; forgets index entries of expired sessions."""
        index = self.keys.sessions
        self.redis.zremrangebyscore(index, "-inf", time.time() - self.settings.event_log_ttl_s)
        infos = []
        for member in cast(list[Any], self.redis.zrevrange(index, 0, limit - 1)):
            session_id = replies.listed_session(member)
            info = None if session_id is None else self.session_info(session_id)
            if info is None:
                self.redis.zrem(index, member)
            else:
                infos.append(info)
        return infos

    def delete_session(self, session_id: str) -> Deleted | Busy:
        """Remove every key of the session, and only its keys; Busy while runs are pending.

        The id is validated (ValueError), the SCAN pattern escaped, and each key found
        must start with the session's own prefix, so `*` or a prefix of another id
        never reaches another session.
        """
        calls.require_session_id(session_id)
        if self.redis.llen(self.keys.pending(session_id)):
            return Busy()
        prefix, removed = self.keys.session_key_prefix(session_id), 0
        batch: list[Any] = []
        pattern = self.keys.session_pattern(session_id)
        for key in self.redis.scan_iter(match=pattern, count=DELETE_BATCH):
            batch.extend(replies.own_keys([key], prefix))
            if len(batch) >= DELETE_BATCH:
                removed += int(self.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self.redis.unlink(*batch))
        self.redis.zrem(self.keys.sessions, session_id)
        return Deleted(keys_removed=removed)

    # -- workers -----------------------------------------------------------

    def claim(self, session_id: str, run_id: str, *, worker: str, host: str) -> ClaimResult:
        """Start the run for this worker if it heads its session and the lease is free."""
        call = self.calls.claim(session_id, run_id, worker=worker, host=host, now=time.time())
        return replies.claim_result(self.scripts.run(call))

    def renew(self, session_id: str, run_id: str, token: str) -> bool:
        """Extend the session lease while it is still this token's; False once lost."""
        return bool(self.scripts.run(self.calls.renew(session_id, run_id, token)) == 1)

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
        """Write event bodies numbered first_index.. (fenced by token, idempotent per index).

        With final_status the run is finished in the same call; `touch` refreshes
        the session's expiries and its place in the sessions index. With `seq_hint` the
        bodies carry the seqs expected for them (RunCalls.append).
        """
        call = self.calls.append(
            session_id,
            run_id,
            token=token,
            first_index=first_index,
            bodies=bodies,
            final_status=final_status,
            touch=touch,
            now=time.time() if now is None else now,
            seq_hint=seq_hint,
        )
        return replies.appended(self.scripts.write_events(call))

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
        """End the run from outside its runner if `condition` holds; True if this call did."""
        record = self.run_record(session_id, run_id)
        raw = self.redis.hgetall(self.keys.approvals(session_id, run_id))
        open_requests = replies.open_requests(session_id, run_id, cast(dict[Any, Any], raw))
        call = self.calls.force_finish(
            session_id,
            run_id,
            status=status,
            condition=condition,
            closing=closing,
            reason=reason,
            started_at=record.started_at,
            now=time.time(),
            open_requests=[o.request.request_id for o in open_requests],
        )
        return bool(self.scripts.run_replicated(call) == 1)

    def run_record(self, session_id: str, run_id: str) -> RunRecord:
        values = self.redis.hmget(self.keys.run(session_id, run_id), list(calls.RUN_RECORD_FIELDS))
        return replies.run_record(cast(list[Any], values))

    def record_pid(self, session_id: str, run_id: str, pid: int, pid_start: int) -> None:
        """Note the CLI's pid (and start time, so a reused pid is told apart) on the run."""
        mapping = {"pid": pid, "pid_start": pid_start}
        self.redis.hset(self.keys.run(session_id, run_id), mapping=mapping)  # type: ignore[arg-type]

    def cancel_requested(self, session_id: str, run_id: str) -> float | None:
        """The grace of a requested cancel (a cancel may arrive before its owner
        listens), or None if none was requested."""
        return replies.cancel_grace(self.redis.get(self.keys.cancel_flag(session_id, run_id)))

    # -- permission requests -------------------------------------------------

    def open_request(self, session_id: str, run_id: str, request: PermissionRequestData) -> None:
        """Record a permission request of this run, so it can be answered (worker)."""
        pipe = self.redis.pipeline(transaction=True)
        for command in self.calls.open_request(session_id, run_id, request):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.execute()

    def decide(
        self,
        session_id: str,
        run_id: str,
        request_id: str,
        decision: Decision,
        *,
        notify: bool = True,
    ) -> AnswerOutcome:
        """Record the request's decision unless one exists; with notify, tell the owner."""
        call = self.calls.decide(session_id, run_id, request_id, decision, notify=notify)
        return replies.answer_outcome(self.scripts.run(call))

    def decisions(
        self, session_id: str, run_id: str, request_ids: list[str]
    ) -> dict[str, Decision]:
        """The recorded decisions of these requests (undecided ones are absent)."""
        if not request_ids:
            return {}
        fields = self.calls.decision_fields(request_ids)
        values = self.redis.hmget(self.keys.approvals(session_id, run_id), fields)
        return replies.decisions(request_ids, cast(list[Any], values))

    def open_requests(self, session_id: str) -> list[OpenRequest]:
        """The undecided permission requests of the session's running run."""
        calls.require_session_id(session_id)
        run_id = self.current_run(session_id)
        if run_id is None:
            return []
        raw = self.redis.hgetall(self.keys.approvals(session_id, run_id))
        return replies.open_requests(session_id, run_id, cast(dict[Any, Any], raw))
