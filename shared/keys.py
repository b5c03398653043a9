"""Every Redis key and channel name claude-queue uses, in one place.

All keys of a session share the `{session_id}` hash tag, so the Lua scripts that
touch several of them stay valid on a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.ids import escape_redis_glob

if TYPE_CHECKING:
    from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (settings.key_prefix), and channel names.

    Pub/sub ignores database numbers: a channel published in db 1 reaches subscribers
    in every db. So channel names also carry the database (`@<db>`), or two
    deployments on one server that differ only by database would hear each other.
    """

    prefix: str
    db: int = 0

    def _session(self, session_id: str) -> str:
        return f"{self.prefix}:{{{session_id}}}"

    def log(self, session_id: str) -> str:
        """Stream: the durable, ordered event log of a session (entry id = `<seq>-0`)."""
        return f"{self._session(session_id)}:log"

    def seq(self, session_id: str) -> str:
        """Counter: last seq assigned in a session."""
        return f"{self._session(session_id)}:seq"

    def channel(self, session_id: str) -> str:
        """Pub/sub channel carrying a session's live events."""
        return f"{self._session(session_id)}:events@{self.db}"

    def pending(self, session_id: str) -> str:
        """List: run ids of a session not yet finished, in submit order."""
        return f"{self._session(session_id)}:pending"

    def session_state(self, session_id: str) -> str:
        """Hash: per-session state carried between runs (claude session id, cwd, ...)."""
        return f"{self._session(session_id)}:state"

    def lease(self, session_id: str) -> str:
        """String: the fencing token of the run allowed to execute in the session now (PX ttl)."""
        return f"{self._session(session_id)}:lease"

    def fence(self, session_id: str) -> str:
        """Counter: last fencing token handed out in the session."""
        return f"{self._session(session_id)}:fence"

    def transcript(self, session_id: str) -> str:
        """Hash: the CLI's conversation transcript (compressed), so any host can resume."""
        return f"{self._session(session_id)}:transcript"

    def run(self, session_id: str, run_id: str) -> str:
        """Hash: the record of one run (status, owner, pid, start time, ...)."""
        return f"{self._session(session_id)}:run:{run_id}"

    def session_key_prefix(self, session_id: str) -> str:
        """The exact start of every key of one session (check SCAN results against it)."""
        return f"{self._session(session_id)}:"

    def session_pattern(self, session_id: str) -> str:
        """SCAN pattern matching every key of one session, and no other session's.

        The id is escaped: `*`, `?`, `[` would otherwise match other sessions' keys.
        """
        return f"{escape_redis_glob(self.session_key_prefix(session_id))}*"

    def wait_marker(self, session_id: str, run_id: str) -> str:
        """String (PX ttl): a worker holds this queued run and waits for its turn."""
        return f"{self._session(session_id)}:run:{run_id}:wait"

    def cancel_flag(self, session_id: str, run_id: str) -> str:
        """String: set when a cancel was requested, so a late spawn still sees it."""
        return f"{self._session(session_id)}:run:{run_id}:cancel"

    def retried(self, session_id: str, run_id: str) -> str:
        """String (EX): the run submitted again in place of this one (retry_lost, retry_on);
        set once (NX), so a run is retried at most once however many see it end."""
        return f"{self._session(session_id)}:run:{run_id}:retried"

    def approvals(self, session_id: str, run_id: str) -> str:
        """Hash: a run's permission requests (`<request_id>` -> request JSON) and their
        decisions (`<request_id>:decision` -> decision JSON, set once)."""
        return f"{self._session(session_id)}:run:{run_id}:approvals"

    def control(self, session_id: str, run_id: str) -> str:
        """Pub/sub channel the owner of a run listens on for control messages."""
        return f"{self._session(session_id)}:run:{run_id}:control@{self.db}"

    def warm_owner(self, session_id: str) -> str:
        """String (PX ttl): the worker holding the session's CLI warm and idle, if any."""
        return f"{self._session(session_id)}:warm"

    def worker_warm(self, worker_name: str) -> str:
        """Hash: session id -> epoch seconds its warm CLI expires, for one worker (status)."""
        return f"{self.prefix}:worker-warm:{worker_name}"

    @property
    def queued(self) -> str:
        """Sorted set: `<session id> <run id>` of every run submitted and not yet claimed,
        cancelled or finished, scored by submit time (the reaper finds a job a dead
        worker took off the queue without starting it)."""
        return f"{self.prefix}:queued"

    @property
    def warm_trees(self) -> str:
        """Sorted set: process markers of warm CLIs (any worker), scored by their expiry;
        the orphan sweep of every worker on a host spares them."""
        return f"{self.prefix}:warm-trees"

    @property
    def sessions(self) -> str:
        """Sorted set: session ids scored by their last activity (epoch seconds)."""
        return f"{self.prefix}:sessions"

    @property
    def archive_outbox(self) -> str:
        """Stream: runs to copy into the PostgreSQL archive (`session_id`, `run_id`, `seq` of
        their `finished`), appended by the script that finishes a run; drained by the
        `archivers` consumer group."""
        return f"{self.prefix}:archive-outbox"

    @property
    def reaper_lock(self) -> str:
        """String: name of the worker elected to reap lost runs (short PX lock)."""
        return f"{self.prefix}:reaper"

    def first_seen_stranded(self, run_id: str) -> str:
        """String (EX): when the reaper first saw a started RQ job whose run never began."""
        return f"{self.prefix}:stranded:{run_id}"

    @property
    def crons(self) -> str:
        """Hash: cron name -> its definition (JSON, shared/cron.py)."""
        return f"{self.prefix}:crons"

    def cron_state(self, name: str) -> str:
        """Hash: a cron's last tick claimed (`last_tick`, compare-and-set by the tickers)
        and the session and run of its last firing."""
        return f"{self.prefix}:cron:{name}:state"

    @property
    def waiting(self) -> str:
        """Hash: run id -> session id of every run a worker holds while it waits its turn."""
        return f"{self.prefix}:waiting"

    @property
    def running(self) -> str:
        """Hash: run id -> session id of every run a worker is executing now."""
        return f"{self.prefix}:running"


def keys_from(settings: Settings) -> Keys:
    """The key namespace for these settings."""
    return Keys(settings.key_prefix, settings.redis_db)
