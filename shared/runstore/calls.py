"""KEYS and ARGV of every RunStore script, and the commands of its reads. Pure.

Both faces (RunStore, AsyncRunStore) send only what these build and read replies only
through replies.py, so the sync and asyncio paths cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared import rqjobs
from shared.control import CancelRequest, PermissionAnswer
from shared.encode import encode_body
from shared.events import (
    DecisionReason,
    Event,
    EventType,
    FinishedData,
    InterruptedData,
    PermissionDecisionData,
    PermissionRequestData,
    RunStatus,
)
from shared.ids import is_request_id, is_session_id
from shared.keys import Keys, keys_from
from shared.runstore import scripts
from shared.runstore.model import (
    Condition,
    Decision,
    FinishCondition,
    NewRun,
    OwnedBy,
)
from shared.settings import Settings

ScriptArg = str | bytes | int | float
Command = tuple[ScriptArg, ...]
# Replay pages of this many entries: large enough to amortise the round trip, small
# enough that one page never holds a client's memory for long.
REPLAY_PAGE = 1000
RUN_RECORD_FIELDS = ("status", "final_status", "started_at")
DELETE_BATCH = 500


class Script(Enum):
    """The store's scripts; the value is the Lua text (its SHA1 is what EVALSHA names)."""

    SUBMIT = scripts.SUBMIT_LUA
    CLAIM = scripts.CLAIM_LUA
    RENEW = scripts.RENEW_LUA
    APPEND = scripts.PUBLISH_LUA
    FORCE_FINISH = scripts.FORCE_FINISH_LUA
    CANCEL = scripts.CANCEL_LUA
    DECIDE = scripts.DECIDE_LUA
    WITHDRAW_WARM = scripts.WITHDRAW_WARM_LUA

    @property
    def sha(self) -> str:
        """The SHA1 of the text: what SCRIPT LOAD returns and EVALSHA names."""
        return _SCRIPT_SHAS[self]


_SCRIPT_SHAS = {
    s: hashlib.sha1(s.value.encode()).hexdigest()  # noqa: S324 - Redis's own script id
    for s in Script
}


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: list[str]
    args: list[ScriptArg]


@dataclass(frozen=True, slots=True)
class RunCalls:
    """Builds every script call and read of the store, under one key prefix and its limits."""

    keys: Keys
    maxlen: int
    ttl_s: int
    lease_ttl_ms: int
    queue_name: str
    # The archive's outbox stream when the archive is on: the scripts that finish a run
    # queue it there in the same step (None: nothing is queued for archiving).
    outbox: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RunCalls:
        return cls(
            keys=keys_from(settings),
            maxlen=settings.event_log_maxlen,
            ttl_s=settings.event_log_ttl_s,
            lease_ttl_ms=int(settings.lease_ttl_s * 1000),
            queue_name=settings.queue_name,
            outbox=keys_from(settings).archive_outbox if settings.archive_enabled else None,
        )

    def _archived(self, keys: list[str]) -> list[str]:
        """A finishing script's keys, plus the outbox when the archive is on."""
        return keys if self.outbox is None else [*keys, self.outbox]

    def _log_args(self, session_id: str, run_id: str, now: float) -> list[ScriptArg]:
        """The ARGV every event-writing script starts with: channel, maxlen, ttl, now, ids."""
        channel = self.keys.channel(session_id)
        return [channel, self.maxlen, self.ttl_s, now, session_id, run_id]

    def submit(self, run: NewRun) -> ScriptCall:
        k, session_id, run_id = self.keys, run.session_id, run.run_id
        now = run.request.submitted_at
        return ScriptCall(
            Script.SUBMIT,
            [
                k.run(session_id, run_id),
                k.pending(session_id),
                k.seq(session_id),
                k.log(session_id),
                k.sessions,
                k.queued,
            ],
            [
                *self._log_args(session_id, run_id, now),
                encode_body(session_id, run_id, now, run.queued),
            ],
        )

    def claim(
        self, session_id: str, run_id: str, *, worker: str, host: str, now: float
    ) -> ScriptCall:
        k = self.keys
        return ScriptCall(
            Script.CLAIM,
            [
                k.run(session_id, run_id),
                k.pending(session_id),
                k.running,
                k.lease(session_id),
                k.fence(session_id),
                k.wait_marker(session_id, run_id),
                k.waiting,
                k.queued,
            ],
            [run_id, session_id, worker, host, now, self.ttl_s, self.lease_ttl_ms],
        )

    def renew(self, session_id: str, run_id: str, token: str) -> ScriptCall:
        keys = [self.keys.lease(session_id), self.keys.run(session_id, run_id)]
        return ScriptCall(Script.RENEW, keys, [token, self.lease_ttl_ms])

    def append(
        self,
        session_id: str,
        run_id: str,
        *,
        token: str,
        first_index: int,
        bodies: Sequence[str | bytes],
        final_status: RunStatus | None,
        touch: bool,
        now: float,
        seq_hint: int = 0,
    ) -> ScriptCall:
        """`seq_hint`: 0 for bodies as encode_body makes them; else the seq the first body
        is expected to get, each body then prefixed with its own (shared.encode.seq_prefix;
        the script says why)."""
        k = self.keys
        return ScriptCall(
            Script.APPEND,
            self._archived(
                [
                    k.run(session_id, run_id),
                    k.seq(session_id),
                    k.log(session_id),
                    k.sessions,
                    k.pending(session_id),
                    k.running,
                    k.lease(session_id),
                ]
            ),
            [
                *self._log_args(session_id, run_id, now),
                token,
                first_index,
                final_status.value if final_status is not None else "",
                1 if touch else 0,
                seq_hint,
                *bodies,
            ],
        )

    def force_finish(
        self,
        session_id: str,
        run_id: str,
        *,
        status: RunStatus,
        condition: FinishCondition,
        closing: Event,
        reason: str,
        started_at: float | None,
        now: float,
        open_requests: Sequence[str] = (),
    ) -> ScriptCall:
        """`open_requests`: permission requests still undecided; each gets its run_ended
        decision before the closing events (the CLI that asked is gone)."""
        k = self.keys
        duration = max(0.0, now - started_at) if started_at else 0.0
        finished = Event(
            type=EventType.FINISHED,
            data=FinishedData(status=status, duration_s=round(duration, 6), reason=reason),
        )
        return ScriptCall(
            Script.FORCE_FINISH,
            self._archived(
                [
                    k.run(session_id, run_id),
                    k.pending(session_id),
                    k.running,
                    k.lease(session_id),
                    k.seq(session_id),
                    k.log(session_id),
                    k.sessions,
                    k.wait_marker(session_id, run_id),
                    k.waiting,
                    k.queued,
                ]
            ),
            [
                *self._log_args(session_id, run_id, now),
                status.value,
                condition_arg(condition),
                *(encode_body(session_id, run_id, now, run_ended(rid)) for rid in open_requests),
                encode_body(session_id, run_id, now, closing),
                encode_body(session_id, run_id, now, finished),
            ],
        )

    def cancel(
        self, session_id: str, run_id: str, *, reason: str, now: float, grace_s: float = 0.0
    ) -> ScriptCall:
        k = self.keys
        interrupted = Event(type=EventType.INTERRUPTED, data=InterruptedData(reason=reason))
        finished = Event(
            type=EventType.FINISHED,
            data=FinishedData(status=RunStatus.INTERRUPTED, duration_s=0.0, reason=reason),
        )
        control = CancelRequest(
            session_id=session_id, run_id=run_id, reason=reason, grace_s=grace_s
        )
        return ScriptCall(
            Script.CANCEL,
            self._archived(
                [
                    k.run(session_id, run_id),
                    k.cancel_flag(session_id, run_id),
                    k.pending(session_id),
                    k.seq(session_id),
                    k.log(session_id),
                    k.sessions,
                    k.queued,
                ]
            ),
            [
                *self._log_args(session_id, run_id, now),
                k.control(session_id, run_id),
                control.model_dump_json(),
                encode_body(session_id, run_id, now, interrupted),
                encode_body(session_id, run_id, now, finished),
                repr(control.grace_s),
            ],
        )

    def decide(
        self, session_id: str, run_id: str, request_id: str, decision: Decision, *, notify: bool
    ) -> ScriptCall:
        """Record the first decision of a request; with notify, tell the run's owner."""
        require_request_id(request_id)
        k = self.keys
        control = ""
        if notify:
            control = PermissionAnswer(
                session_id=session_id,
                run_id=run_id,
                request_id=request_id,
                behavior=decision.behavior,
                message=decision.message,
                updated_input=decision.updated_input,
                decided_by=decision.decided_by,
            ).model_dump_json()
        return ScriptCall(
            Script.DECIDE,
            [k.run(session_id, run_id), k.approvals(session_id, run_id)],
            [
                request_id,
                decision.model_dump_json(),
                k.control(session_id, run_id) if notify else "",
                control,
            ],
        )

    def open_request(
        self, session_id: str, run_id: str, request: PermissionRequestData
    ) -> list[Command]:
        """The writes that record a new permission request (before its event is published)."""
        require_request_id(request.request_id)
        key = self.keys.approvals(session_id, run_id)
        return [
            ("HSET", key, request.request_id, request.model_dump_json()),
            ("EXPIRE", key, self.ttl_s),
        ]

    def decision_fields(self, request_ids: Sequence[str]) -> list[str]:
        """The approvals-hash fields holding these requests' decisions."""
        return [f"{request_id}:decision" for request_id in request_ids]

    def advertise_warm(
        self, worker: str, sessions: dict[str, float], *, now: float
    ) -> list[Command]:
        """The writes that say: these sessions' CLIs are warm and idle on `worker`.

        Each session's owner key lives until its CLI expires; the worker's hash (for
        `status`) is replaced as a whole and lives as long as the longest of them.
        """
        commands: list[Command] = []
        for session_id, expires_at in sessions.items():
            ttl_ms = int((expires_at - now) * 1000)
            if ttl_ms > 0:
                commands.append(("SET", self.keys.warm_owner(session_id), worker, "PX", ttl_ms))
        index = self.keys.worker_warm(worker)
        commands.append(("DEL", index))
        live = {s: e for s, e in sessions.items() if e > now}
        if live:
            fields = [item for pair in live.items() for item in (pair[0], repr(pair[1]))]
            commands.append(("HSET", index, *fields))
            commands.append(("PEXPIREAT", index, int(max(live.values()) * 1000)))
        return commands

    def withdraw_warm(self, worker: str, session_id: str) -> ScriptCall:
        return ScriptCall(Script.WITHDRAW_WARM, [self.keys.warm_owner(session_id)], [worker])

    @property
    def queue_key(self) -> str:
        """RQ's list of queued job ids: a run cancelled while queued leaves it."""
        return rqjobs.queue_key(self.queue_name)

    def canceled_job(self, pipe: Any, run_id: str) -> None:
        """Queue on `pipe` what marks a job taken off the queue canceled (`rq info`).

        Not one script with the LREM: a script's keys need read access too, and a
        producer may write RQ jobs but never read another producer's.
        """
        rqjobs.canceled_writes(pipe, self.queue_name, run_id, ttl_s=rqjobs.CANCELED_TTL_S)

    def session_reads(self, session_id: str) -> list[Command]:
        """What `session_info` reads in one pipeline (parsed by `session_info`)."""
        k = self.keys
        return [
            ("LRANGE", k.pending(session_id), 0, -1),
            ("HGETALL", k.session_state(session_id)),
            ("XLEN", k.log(session_id)),
            ("GET", k.seq(session_id)),
            ("ZSCORE", k.sessions, session_id),
            # The size only: a producer never reads a conversation (see shared/acl.py).
            ("HSTRLEN", k.transcript(session_id), "data"),
        ]

    def held_indexes(self) -> list[tuple[str, bool]]:
        """The hashes of runs workers hold: (key, waiting)."""
        return [(self.keys.running, False), (self.keys.waiting, True)]


RUN_ENDED_MESSAGE = "The run ended before this permission request was answered."


def run_ended(request_id: str) -> Event:
    """The decision of a request whose run ended first: denied, reason run_ended."""
    data = PermissionDecisionData(
        request_id=request_id,
        behavior="deny",
        message=RUN_ENDED_MESSAGE,
        reason=DecisionReason.RUN_ENDED,
    )
    return Event(type=EventType.PERMISSION_DECISION, data=data)


def condition_arg(condition: FinishCondition) -> str:
    """FORCE_FINISH_LUA's condition argument."""
    if isinstance(condition, OwnedBy):
        return f"worker:{condition.worker_name}"
    return Condition(condition).value


def replay_range(after: int, upto: int | None) -> tuple[str, str]:
    """XRANGE bounds for seqs in (after, upto]; entry ids are `<seq>-0`."""
    return f"{after + 1}-0", "+" if upto is None else f"{upto}-0"


def require_request_id(request_id: str) -> None:
    """ValueError unless this is a permission request id: it is about to name a field."""
    if not is_request_id(request_id):
        raise ValueError(f"{request_id!r} is not a permission request id")


def require_session_id(session_id: str) -> None:
    """ValueError unless this is a session id: it is about to name keys and a SCAN pattern."""
    if not is_session_id(session_id):
        raise ValueError(f"{session_id!r} is not a session id")
