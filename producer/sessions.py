"""Session management: list, show, delete. Sessions expire on their own after
`event_log_ttl_s` of inactivity; every session key carries that TTL.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis
import structlog

from producer.errors import InvalidJobError, SessionBusy
from shared.ids import is_run_id, is_session_id
from shared.keys import Keys
from shared.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    state: str  # running | queued | idle
    pending_runs: list[str] = field(default_factory=list)
    last_run_id: str | None = None
    claude_session_id: str | None = None
    cwd: str | None = None
    events: int = 0
    last_seq: int = 0
    transcript_bytes: int = 0
    last_activity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _s(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def require_session_id(session_id: str) -> None:
    """Raise InvalidJobError unless `session_id` is one `submit` would accept."""
    if not is_session_id(session_id):
        raise InvalidJobError(
            f"session_id: {session_id!r} is not a session id "
            "(1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit)"
        )


def pending_run_ids(client: redis.Redis, keys: Keys, session_id: str) -> list[str]:
    """The session's queued and running runs; entries that are no run id are skipped."""
    entries = [
        _s(e) or "" for e in cast(list[bytes], client.lrange(keys.pending(session_id), 0, -1))
    ]
    return [e for e in entries if is_run_id(e)]


def session_info(client: redis.Redis, keys: Keys, session_id: str) -> SessionInfo | None:
    """What is known about one session, or None if it has no keys at all."""
    require_session_id(session_id)
    pipe = client.pipeline(transaction=False)
    pipe.lrange(keys.pending(session_id), 0, -1)
    pipe.hgetall(keys.session_state(session_id))
    pipe.xlen(keys.log(session_id))
    pipe.get(keys.seq(session_id))
    pipe.zscore(keys.sessions, session_id)
    pipe.hstrlen(keys.transcript(session_id), "data")
    pending, state, events, seq, score, transcript = pipe.execute()
    if not pending and not state and not events and seq is None:
        return None
    pending_ids = [_s(p) or "" for p in pending]
    status = "idle"
    if pending_ids:
        head = pending_ids[0]
        # A pending entry is data: only a real run id names a run record.
        head_status = (
            _s(client.hget(keys.run(session_id, head), "status")) if is_run_id(head) else None
        )
        status = "running" if head_status == "running" else "queued"
    decoded = {k.decode(): _s(v) for k, v in cast(dict[bytes, bytes], state).items()}
    return SessionInfo(
        session_id=session_id,
        state=status,
        pending_runs=pending_ids,
        last_run_id=decoded.get("last_run_id"),
        claude_session_id=decoded.get("claude_session_id"),
        cwd=decoded.get("cwd"),
        events=int(events or 0),
        last_seq=int(seq or 0),
        transcript_bytes=int(transcript or 0),
        last_activity=float(score) if score is not None else None,
    )


def list_sessions(
    client: redis.Redis, keys: Keys, settings: Settings, *, limit: int = 100
) -> list[SessionInfo]:
    """Most recently active sessions first; forgets index entries of expired sessions."""
    client.zremrangebyscore(keys.sessions, "-inf", time.time() - settings.event_log_ttl_s)
    members = cast(list[bytes], client.zrevrange(keys.sessions, 0, limit - 1))
    infos = []
    for member in members:
        session_id = member.decode(errors="replace")
        if not is_session_id(session_id):
            # Only submit writes this index, and it validates; anything else is junk.
            log.warning("invalid_session_id_skipped", session_id=session_id)
            client.zrem(keys.sessions, member)
            continue
        info = session_info(client, keys, session_id)
        if info is None:
            client.zrem(keys.sessions, member)
        else:
            infos.append(info)
    return infos


def delete_session(client: redis.Redis, keys: Keys, session_id: str) -> int:
    """Remove every key of the session (log, transcript, state, runs). Returns keys removed.

    Deletes exactly this session's keys: the id is validated (InvalidJobError), the
    SCAN pattern is escaped, and each key found must start with the session's own
    prefix, so `*` or a prefix of another id never reaches another session.
    Raises SessionBusy if a run is queued or running; cancel those first (or use
    `Client.delete_session(force=True)`, which does).
    """
    require_session_id(session_id)
    if client.llen(keys.pending(session_id)):
        raise SessionBusy(
            f"session {session_id} has runs queued or running; cancel them or use --force"
        )
    prefix = keys.session_key_prefix(session_id).encode()
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=keys.session_pattern(session_id), count=500):
        if not key.startswith(prefix):
            continue  # defence in depth: the escaped pattern should never return one
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    client.zrem(keys.sessions, session_id)
    return removed
