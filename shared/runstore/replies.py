"""What every RunStore reply means, as types. Pure: the faces hand replies straight here.

Replies may be bytes or str (a client may decode responses), and ids read back are
data: anything that is not a valid id is skipped, never used to name a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from shared.control import MAX_GRACE_S
from shared.events import Envelope, PermissionRequestData, envelopes_from_json
from shared.forwarded import Forwarded, forwarded_page
from shared.gcpause import gc_paused
from shared.ids import is_request_id, is_run_id, is_session_id
from shared.runstore.model import (
    AnswerOutcome,
    Appended,
    CancelOutcome,
    Claimed,
    ClaimResult,
    Decision,
    HeldRun,
    OpenRequest,
    RunRecord,
    RunState,
    SessionInfo,
    SessionState,
    Skip,
    Waiting,
)

log = structlog.get_logger(__name__)

ENVELOPE_FIELD = b"e"


def text(value: object) -> str | None:
    """A Redis reply as str (None stays None); clients may or may not decode responses."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def envelopes(entries: Iterable[Sequence[Any]]) -> list[Envelope]:
    """The envelopes of one XRANGE page, in its order."""
    raws = _raws(entries)
    with gc_paused():
        return envelopes_from_json(raws)


def forwarded(entries: Iterable[Sequence[Any]]) -> list[Forwarded]:
    """The envelopes of one XRANGE page, in its order, read only to be passed on."""
    return forwarded_page(_raws(entries))


def _raws(entries: Iterable[Sequence[Any]]) -> list[bytes | str]:
    # The common case inline (a raw reply holding one field, `e`): ~1 us an entry saved.
    return [
        fields[1] if type(fields) is list and fields[0] == ENVELOPE_FIELD else _field(fields)
        for _entry_id, fields in entries  # (entry id, fields): raw replies are lists
    ]


def raw_reply(response: object, **_options: object) -> object:
    """A response callback that keeps a reply as Redis sent it (RunStore's log reader)."""
    return response


def _field(fields: dict[Any, Any] | list[Any]) -> bytes | str:
    """The envelope of one entry: its fields as redis-py's dict, or as the raw flat list
    [name, value, ...] (RunStore's reader skips redis-py's per-entry dicts)."""
    if isinstance(fields, dict):
        # A client with decode_responses=True hands back str field names.
        value = fields.get(ENVELOPE_FIELD)
        return fields["e"] if value is None else value  # type: ignore[no-any-return]
    for name, value in zip(fields[::2], fields[1::2], strict=True):
        if name in (b"e", "e"):
            return value  # type: ignore[no-any-return]
    raise ValueError("a log entry without an envelope field")


def seq(reply: object) -> int | None:
    """A seq counter's value; None if the counter does not exist."""
    value = text(reply)
    return None if value is None else int(value)


def claim_result(reply: Sequence[object]) -> ClaimResult:
    state = text(reply[0])
    if state == "claimed":
        return Claimed(token=text(reply[1]) or "")
    if state == "waiting":
        return Waiting(head=text(reply[1]) or None)
    return Skip(state=RunState(state or ""))


def appended(reply: object) -> Appended:
    seq = int(text(reply) or 0)
    return Appended(accepted=False) if seq < 0 else Appended(accepted=True, last_seq=seq)


def cancel_outcome(reply: object) -> CancelOutcome:
    return CancelOutcome(text(reply) or "")


def answer_outcome(reply: object) -> AnswerOutcome:
    return AnswerOutcome(text(reply) or "")


def cancel_grace(reply: object) -> float | None:
    """A cancel flag's grace period; None if no cancel was requested.

    A value that is not a grace (an older producer stored the time) reads as 0: kill now.
    """
    value = text(reply)
    if value is None:
        return None
    try:
        grace = float(value)
    except ValueError:
        return 0.0
    return grace if 0.0 <= grace <= MAX_GRACE_S else 0.0


def open_requests(session_id: str, run_id: str, raw: dict[Any, Any]) -> list[OpenRequest]:
    """The undecided requests in a run's approvals hash, oldest deadline first.

    Records that do not validate are skipped (logged): they are data from Redis.
    """
    fields = {text(k) or "": v for k, v in raw.items()}
    found = []
    for name, value in fields.items():
        if not is_request_id(name) or f"{name}:decision" in fields:
            continue
        try:
            request = PermissionRequestData.validate_read(json.loads(text(value) or ""))
        except (ValueError, ValidationError):
            log.warning("invalid_permission_request_skipped", request_id=name)
            continue
        if request.request_id == name:
            found.append(OpenRequest(session_id=session_id, run_id=run_id, request=request))
    return sorted(found, key=lambda item: item.request.expires_at)


def decisions(request_ids: Sequence[str], values: Sequence[object]) -> dict[str, Decision]:
    """Decisions read with HMGET of decision_fields; undecided or invalid ones are left out."""
    found = {}
    for request_id, value in zip(request_ids, values, strict=True):
        raw = text(value)
        if raw is None:
            continue
        try:
            found[request_id] = Decision.model_validate_json(raw)
        except ValidationError:
            log.warning("invalid_decision_skipped", request_id=request_id)
    return found


def warm_sessions(raw: dict[Any, Any]) -> dict[str, float]:
    """A worker's warm index; entries that are not a session id and a time are skipped."""
    found = {}
    for key, value in raw.items():
        session_id = text(key) or ""
        try:
            expires_at = float(text(value) or "")
        except ValueError:
            continue
        if is_session_id(session_id):
            found[session_id] = expires_at
    return found


def run_record(values: Sequence[object]) -> RunRecord:
    """A RunRecord from HMGET of RUN_RECORD_FIELDS."""
    status, final_status, started_at = (text(v) for v in values)
    try:
        state: RunState | None = RunState(status or "")
    except ValueError:
        state = None  # no record, or a state written by a newer version
    try:
        started = float(started_at) if started_at else None
    except ValueError:
        started = None
    return RunRecord(state=state, final_status=final_status, started_at=started)


def run_ids(entries: Iterable[object]) -> list[str]:
    """Pending entries that name runs; anything else in the list is data, not an id."""
    return [e for e in (text(v) or "" for v in entries) if is_run_id(e)]


def held_runs(raw: dict[Any, Any], *, waiting: bool) -> tuple[list[HeldRun], list[Any]]:
    """Valid entries of a running/waiting index, and the raw fields of invalid ones."""
    held, invalid = [], []
    for raw_run_id, raw_session_id in raw.items():
        run_id, session_id = text(raw_run_id) or "", text(raw_session_id) or ""
        if is_session_id(session_id) and is_run_id(run_id):
            held.append(HeldRun(session_id=session_id, run_id=run_id, waiting=waiting))
        else:
            # No run can have such ids (submit refuses them).
            log.warning("invalid_ids_skipped", session_id=session_id, run_id=run_id)
            invalid.append(raw_run_id)
    return held, invalid


def queued_members(members: Sequence[object]) -> tuple[list[HeldRun], list[object]]:
    """`<session id> <run id>` index members as runs, and the members that are not."""
    runs, junk = [], []
    for member in members:
        session_id, _, run_id = (text(member) or "").partition(" ")
        if is_session_id(session_id) and is_run_id(run_id):
            runs.append(HeldRun(session_id=session_id, run_id=run_id, waiting=False))
        else:
            junk.append(member)
    return runs, junk


def head_run(value: object) -> str | None:
    """A pending list's head entry as a run id; None if empty or not a run id."""
    head = text(value)
    # A pending entry is data: only a real run id names a run record.
    return head if is_run_id(head) else None


def pending_head(replies: Sequence[Any]) -> str | None:
    """The run id heading a session's pending list (from session_reads' replies), if any."""
    pending = replies[0]
    return head_run(pending[0]) if pending else None


def session_info(
    session_id: str, replies: Sequence[Any], head_status: object
) -> SessionInfo | None:
    """SessionInfo from session_reads' replies and the head run's status; None if no keys."""
    pending, state, events, seq, score, transcript = replies
    if not pending and not state and not events and seq is None:
        return None
    status = SessionState.IDLE
    if pending:
        running = text(head_status) == RunState.RUNNING
        status = SessionState.RUNNING if running else SessionState.QUEUED
    decoded = {text(k): text(v) for k, v in dict(state).items()}
    return SessionInfo(
        session_id=session_id,
        state=status,
        pending_runs=[text(p) or "" for p in pending],
        last_run_id=decoded.get("last_run_id"),
        claude_session_id=decoded.get("claude_session_id"),
        cwd=decoded.get("cwd"),
        events=int(events or 0),
        last_seq=int(seq or 0),
        transcript_bytes=int(transcript or 0),
        last_activity=float(score) if score is not None else None,
    )


def own_keys(found: Iterable[Any], prefix: str) -> list[Any]:
    """Keys SCAN returned that really start with the session's own prefix.

    Defence in depth: the escaped SCAN pattern should never return another's key.
    """
    raw_prefix = prefix.encode()
    return [
        k for k in found if (k if isinstance(k, bytes) else str(k).encode()).startswith(raw_prefix)
    ]


def listed_session(member: object) -> str | None:
    """A session id from the sessions index, or None (logged) for junk to drop."""
    session_id = text(member) or ""
    if is_session_id(session_id):
        return session_id
    # Only submit writes this index, and it validates; anything else is junk.
    log.warning("invalid_session_id_skipped", session_id=session_id)
    return None
