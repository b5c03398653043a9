"""What workers hold, for the sync RunStore: warm CLIs (their advertisements and
process markers), runs being executed or held while waiting, and runs nobody claimed.
The worker's warm registry and the reaper read and write these."""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from shared.ids import is_run_id
from shared.keys import Keys
from shared.runstore import replies
from shared.runstore.calls import RunCalls
from shared.runstore.model import HeldRun
from shared.runstore.scripting import ScriptRunner


class WorkerRegistry:
    """RunStore's part for worker-held state; RunStore sets these attributes."""

    redis: redis.Redis
    calls: RunCalls
    keys: Keys
    scripts: ScriptRunner

    def advertise_warm(self, worker: str, sessions: dict[str, float]) -> None:
        """Say which sessions' CLIs `worker` holds warm and idle (session -> expires at)."""
        pipe = self.redis.pipeline(transaction=False)
        for command in self.calls.advertise_warm(worker, sessions, now=time.time()):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.execute()

    def withdraw_warm(self, worker: str, session_ids: list[str]) -> None:
        """Stop advertising these sessions (only where the advertisement is still ours)."""
        if not session_ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for session_id in session_ids:
            self.scripts.queue(self.calls.withdraw_warm(worker, session_id), pipe)
        pipe.hdel(self.keys.worker_warm(worker), *session_ids)
        pipe.execute()

    def withdraw_all_warm(self, worker: str, session_ids: list[str]) -> None:
        """withdraw_warm of these sessions and of every other one `worker`'s index lists
        (e.g. left by a process of that name that died): one round trip, the index read
        in it, unless the index lists sessions beyond these."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.worker_warm(worker))
        for session_id in session_ids:
            self.scripts.queue(self.calls.withdraw_warm(worker, session_id), pipe)
        if session_ids:
            pipe.hdel(self.keys.worker_warm(worker), *session_ids)
        indexed = replies.warm_sessions(cast(dict[Any, Any], pipe.execute()[0]))
        self.withdraw_warm(worker, [s for s in indexed if s not in session_ids])

    def fences(self, session_ids: list[str]) -> dict[str, int | None]:
        """Each session's last fencing token (None: no counter, e.g. deleted)."""
        if not session_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.get(self.keys.fence(session_id))
        return {s: replies.seq(v) for s, v in zip(session_ids, pipe.execute(), strict=True)}

    def unclaimed_runs(self, *, older_than_s: float, limit: int = 100) -> list[HeldRun]:
        """Runs submitted over older_than_s ago and not yet claimed, cancelled or ended
        (oldest first); index entries that name no run are dropped."""
        index = self.keys.queued
        members = self.redis.zrangebyscore(
            index, "-inf", time.time() - older_than_s, start=0, num=limit
        )
        runs, junk = replies.queued_members(cast(list[Any], members))
        if junk:
            self.redis.zrem(index, *cast(list[Any], junk))
        return runs

    def forget_unclaimed(self, session_id: str, run_id: str) -> None:
        """Drop a run from the index of unclaimed runs (its record is gone or moved on)."""
        self.redis.zrem(self.keys.queued, f"{session_id} {run_id}")

    def note_warm_trees(self, trees: dict[str, float]) -> None:
        """Record warm CLIs' process markers (-> epoch expiry) for every worker's sweep."""
        if trees:
            self.redis.zadd(self.keys.warm_trees, trees)

    def forget_warm_trees(self, tree_ids: list[str]) -> None:
        if tree_ids:
            self.redis.zrem(self.keys.warm_trees, *tree_ids)

    def warm_tree_ids(self) -> set[str]:
        """Markers of warm CLIs not yet past their expiry (older entries are dropped)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.warm_trees, "-inf", time.time())
            pipe.zrange(self.keys.warm_trees, 0, -1)
            members = pipe.execute()[1]
        return {m for m in (replies.text(v) or "" for v in members) if is_run_id(m)}

    def warm_owner(self, session_id: str) -> str | None:
        """The worker advertising the session's CLI as warm and idle, if any."""
        return replies.text(self.redis.get(self.keys.warm_owner(session_id)))

    def warm_sessions(self, worker: str) -> dict[str, float]:
        """Sessions `worker` holds warm: session id -> epoch seconds it expires."""
        raw = cast(dict[Any, Any], self.redis.hgetall(self.keys.worker_warm(worker)))
        return replies.warm_sessions(raw)

    def running_session(self, run_id: str) -> str | None:
        """The session of a run some worker is executing now, or None."""
        return replies.text(self.redis.hget(self.keys.running, run_id))

    def running_runs(self) -> dict[str, str]:
        """Every run some worker is executing now: run id -> session id."""
        raw = cast(dict[Any, Any], self.redis.hgetall(self.keys.running))
        return {replies.text(k) or "": replies.text(v) or "" for k, v in raw.items()}

    def running_run_ids(self) -> set[str]:
        """Every run some worker is executing now."""
        return set(self.running_runs())

    def held_runs(self) -> list[HeldRun]:
        """Every run a worker runs or holds while it waits; entries with bad ids are dropped."""
        held = []
        for index, waiting in self.calls.held_indexes():
            raw = cast(dict[Any, Any], self.redis.hgetall(index))
            valid, invalid = replies.held_runs(raw, waiting=waiting)
            if invalid:
                # Dropped, so they are reported once, not every round.
                self.redis.hdel(index, *invalid)
            held.extend(valid)
        return held
