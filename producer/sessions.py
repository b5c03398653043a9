"""Session management: list, show, delete. Sessions expire on their own after
`event_log_ttl_s` of inactivity; every session key carries that TTL.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from producer.errors import SessionBusy
from shared.keys import Keys
from shared.settings import Settings


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


def session_info(client: redis.Redis, keys: Keys, session_id: str) -> SessionInfo | None:
    """What is known about one session, or None if it has no keys at all."""
    pipe = client.pipeline(transaction=False)
    pipe.lrange(keys.pending(session_id), 0, -1)
    pipe.hgetall(keys.session_state(session_id))
    pipe.xlen(keys.log(session_id))
    pipe.get(keys.seq(session_id))
    pipe.zscore(keys.sessions, session_id)
    pipe.hget(keys.transcript(session_id), "data")
    pending, state, events, seq, score, transcript = pipe.execute()
    if not pending and not state and not events and seq is None:
        return None
    pending_ids = [_s(p) or "" for p in pending]
    status = "idle"
    if pending_ids:
        head = _s(client.hget(keys.run(session_id, pending_ids[0]), "status"))
        status = "running" if head == "running" else "queued"
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
        transcript_bytes=len(transcript) if transcript else 0,
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
        info = session_info(client, keys, member.decode())
        if info is None:
            client.zrem(keys.sessions, member)
        else:
            infos.append(info)
    return infos


def delete_session(client: redis.Redis, keys: Keys, session_id: str) -> int:
    """Remove every key of the session (log, transcript, state, runs). Returns keys removed.

    Raises SessionBusy if a run is queued or running; cancel those first (or use
    `Client.delete_session(force=True)`, which does).
    """
    if client.llen(keys.pending(session_id)):
        raise SessionBusy(
            f"session {session_id} has runs queued or running; cancel them or use --force"
        )
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=keys.session_pattern(session_id), count=500):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    client.zrem(keys.sessions, session_id)
    return removed
