"""Session management as producers see it: ids checked with the producer's own errors.

Listing, reading and deleting sessions are RunStore operations (shared/runstore);
sessions expire on their own after `event_log_ttl_s` of inactivity, since every
session key carries that TTL.
"""

from __future__ import annotations

from producer.errors import InvalidJobError, SessionBusy
from shared.ids import is_session_id
from shared.runstore import SessionInfo, SessionState

__all__ = ["SessionInfo", "SessionState", "busy_error", "require_session_id"]


def require_session_id(session_id: str) -> None:
    """Raise InvalidJobError unless `session_id` is one `submit` would accept."""
    if not is_session_id(session_id):
        raise InvalidJobError(
            f"session_id: {session_id!r} is not a session id "
            "(1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit)"
        )


def busy_error(session_id: str, *, deleting: bool = False) -> SessionBusy:
    """The SessionBusy raised when a session's pending runs refuse a submit or delete."""
    if deleting:
        return SessionBusy(
            f"session {session_id} has runs queued or running; cancel them or use --force"
        )
    return SessionBusy(f"session {session_id} has a run queued or running")
