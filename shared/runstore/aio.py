"""AsyncRunStore: the store's producer operations over redis.asyncio. I/O only; see calls.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared import rqjobs
from shared.events import Envelope
from shared.forwarded import Forwarded
from shared.rqjobs import SubmitQueues
from shared.runstore import calls, placing, replies
from shared.runstore.calls import DELETE_BATCH, REPLAY_PAGE, Command, RunCalls, Script, ScriptCall
from shared.runstore.model import (
    AnswerOutcome,
    Busy,
    CancelOutcome,
    Decision,
    Deleted,
    NewRun,
    OpenRequest,
    SessionInfo,
    Submitted,
)
from shared.runstore.scripting import queue_script
from shared.scheduling import Placement
from shared.settings import Settings


class _RecordOnly(redis.Connection):
    """RQ's enqueue is recorded on a sync pipeline that never runs: it must never connect."""

    def connect(self) -> None:
        raise RuntimeError("RQ tried to reach Redis while its enqueue was being recorded")


class AsyncRunStore:
    """The store for asyncio code (AsyncClient): submit, cancel, replay, sessions."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.calls = RunCalls.from_settings(settings)
        self.keys = self.calls.keys
        self._reader: aioredis.Redis | None = None
        self._scripts: dict[Script, AsyncScript] = {}
        self._version_lookup: asyncio.Future[None] | None = None
        # RQ is sync-only: its enqueue is recorded through this client, then replayed
        # on the asyncio pipeline, inside the same MULTI as the submit script.
        recorder = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=_RecordOnly))
        self._queues = SubmitQueues(settings.queue_name, recorder)

    async def _run(self, call: ScriptCall) -> Any:
        script = self._scripts.get(call.script)
        if script is None:
            script = self._scripts[call.script] = self.redis.register_script(call.script.value)
        return await script(keys=call.keys, args=call.args)

    def _recorded_enqueue(
        self, run: NewRun, worker_name: str | None, list_name: str, where: Placement
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The commands RQ's enqueue of this run (routed to `worker_name`'s own queue, or
        the shared one's `list_name`) sends, recorded, not sent."""
        queue = self._queues.get(worker_name, list_name)
        recording = queue.connection.pipeline()
        try:
            placing.enqueue(queue, run, recording, where)
            return list(recording.command_stack)
        finally:
            recording.reset()

    async def _learn_server_version(self) -> None:
        # RQ reads it (INFO) before its first enqueue; the recorder cannot ask. First
        # submits that overlap share one INFO: a hundred at once sent a hundred.
        if self._queues.server_version is not None:
            return
        lookup = self._version_lookup
        if lookup is None:
            lookup = self._version_lookup = asyncio.ensure_future(self._read_server_version())
            lookup.add_done_callback(_retrieved)
        try:
            await asyncio.shield(lookup)  # one caller cancelled does not cancel the rest
        finally:
            if lookup.done() and self._version_lookup is lookup:
                self._version_lookup = None  # learned, or failed: the next submit asks again

    async def _read_server_version(self) -> None:
        info = await self.redis.info("server")
        self._queues.server_version = placing.version_tuple(info["redis_version"])

    async def submit(self, run: NewRun, *, reject_if_busy: bool = False) -> Submitted | Busy:
        """See RunStore.submit: the RQ job and the `queued` event in one MULTI/EXEC, on
        the warm owner's own queue (watched) or the shared one."""
        await self._learn_server_version()
        k, session_id, queue_name = self.keys, run.session_id, self.settings.queue_name
        pending, owner = k.pending(session_id), k.warm_owner(session_id)
        while True:
            async with self.redis.pipeline() as pipe:
                try:
                    await pipe.watch(owner, pending)
                    waiting = await pipe.lrange(pending, 0, -1)
                    if reject_if_busy and waiting:
                        return Busy()
                    fields = list(placing.RECORD_FIELDS)
                    records = [
                        await pipe.hmget(placing.record_key(k, session_id, m), fields)
                        for m in waiting
                    ]
                    where = placing.placement(run, records, now=time.time())
                    routed = None
                    if where.may_route:
                        routed = placing.routed_worker(await pipe.get(owner))
                    placed = placing.placed(run, where)
                    recorded = self._recorded_enqueue(
                        placed, routed, placing.list_name(queue_name, where), where
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for args, options in recorded:
                        pipe.execute_command(*args, **options)
                    # SCRIPT LOAD and EVALSHA, without redis-py's SCRIPT EXISTS round
                    # trip first (shared/runstore/scripting.py)
                    queue_script(pipe, self.calls.submit(placed))
                    record, written = placing.record_writes(k, placed, where)
                    pipe.hset(record, mapping=written)  # type: ignore[arg-type]
                    return Submitted(queued_seq=int((await pipe.execute())[-2]))
                except redis.WatchError:
                    continue  # the session or its warm owner changed while we looked

    async def cancel(
        self, session_id: str, run_id: str, *, reason: str, grace_s: float = 0.0
    ) -> CancelOutcome:
        """See RunStore.cancel."""
        call = self.calls.cancel(
            session_id, run_id, reason=reason, now=time.time(), grace_s=grace_s
        )
        outcome = replies.cancel_outcome(await self._run(call))
        if outcome is CancelOutcome.CANCELLED_QUEUED and await self._withdraw_job(run_id):
            async with self.redis.pipeline() as pipe:
                self.calls.canceled_job(pipe, run_id)
                await pipe.execute()
        return outcome

    async def _withdraw_job(self, run_id: str) -> bool:
        """Take a cancelled run's job out of every list (priority) or registry (delayed)
        it waits in; True if one held it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in rqjobs.job_removals(self.settings.queue_name, run_id):
                pipe.execute_command(*command)
            return any(int(n) for n in await pipe.execute())

    async def decide(
        self,
        session_id: str,
        run_id: str,
        request_id: str,
        decision: Decision,
        *,
        notify: bool = True,
    ) -> AnswerOutcome:
        """See RunStore.decide."""
        call = self.calls.decide(session_id, run_id, request_id, decision, notify=notify)
        return replies.answer_outcome(await self._run(call))

    async def open_requests(self, session_id: str) -> list[OpenRequest]:
        """See RunStore.open_requests."""
        calls.require_session_id(session_id)
        run_id = await self.current_run(session_id)
        if run_id is None:
            return []
        raw = await self.redis.hgetall(self.keys.approvals(session_id, run_id))
        return replies.open_requests(session_id, run_id, cast(dict[Any, Any], raw))

    async def pending_runs(self, session_id: str) -> list[str]:
        entries = await self.redis.lrange(self.keys.pending(session_id), 0, -1)
        return replies.run_ids(cast(list[Any], entries))

    async def current_run(self, session_id: str) -> str | None:
        return replies.head_run(await self.redis.lindex(self.keys.pending(session_id), 0))

    def _log_reader(self) -> aioredis.Redis:
        """A client on the same connection pool whose XRANGE replies stay raw lists:
        replies.envelopes reads them directly, where redis-py would first build a dict
        per entry (~20 ms of a 10,000-event replay). Made on first use."""
        if self._reader is None:
            pool = getattr(self.redis, "connection_pool", None)
            if pool is None:  # a stand-in client (tests)
                return self.redis
            self._reader = aioredis.Redis(connection_pool=pool)
            self._reader.set_response_callback("XRANGE", replies.raw_reply)
        return self._reader

    async def replay_page(
        self, session_id: str, after: int, upto: int | None = None, count: int = REPLAY_PAGE
    ) -> list[Envelope]:
        """See RunStore.replay_page."""
        return replies.envelopes(await self._log_entries(session_id, after, upto, count))

    async def forward_page(
        self, session_id: str, after: int, upto: int | None = None, count: int = REPLAY_PAGE
    ) -> list[Forwarded]:
        """replay_page's envelopes read only to be passed on (shared/forwarded.py)."""
        return replies.forwarded(await self._log_entries(session_id, after, upto, count))

    async def _log_entries(
        self, session_id: str, after: int, upto: int | None, count: int
    ) -> list[Any]:
        start, end = calls.replay_range(after, upto)
        entries = await self._log_reader().xrange(
            self.keys.log(session_id), start, end, count=count
        )
        return cast(list[Any], entries)

    async def replay(
        self, session_id: str, after: int = 0, upto: int | None = None
    ) -> AsyncIterator[Envelope]:
        """See RunStore.replay."""
        while True:
            page = await self.replay_page(session_id, after, upto)
            for envelope in page:
                yield envelope
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].seq

    async def last_seq(self, session_id: str) -> int | None:
        """See RunStore.last_seq."""
        return replies.seq(await self.redis.get(self.keys.seq(session_id)))

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """See RunStore.session_info."""
        calls.require_session_id(session_id)
        read = await self._pipeline(self.calls.session_reads(session_id))
        head = replies.pending_head(read)
        status = (
            None
            if head is None
            else await self.redis.hget(self.keys.run(session_id, head), "status")
        )
        return replies.session_info(session_id, read, status)

    async def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        """See RunStore.sessions."""
        index = self.keys.sessions
        await self.redis.zremrangebyscore(
            index, "-inf", time.time() - self.settings.event_log_ttl_s
        )
        infos = []
        for member in cast(list[Any], await self.redis.zrevrange(index, 0, limit - 1)):
            session_id = replies.listed_session(member)
            info = None if session_id is None else await self.session_info(session_id)
            if info is None:
                await self.redis.zrem(index, member)
            else:
                infos.append(info)
        return infos

    async def delete_session(self, session_id: str) -> Deleted | Busy:
        """See RunStore.delete_session."""
        calls.require_session_id(session_id)
        if await self.redis.llen(self.keys.pending(session_id)):
            return Busy()
        prefix, removed = self.keys.session_key_prefix(session_id), 0
        batch: list[Any] = []
        pattern = self.keys.session_pattern(session_id)
        async for key in self.redis.scan_iter(match=pattern, count=DELETE_BATCH):
            batch.extend(replies.own_keys([key], prefix))
            if len(batch) >= DELETE_BATCH:
                removed += int(await self.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self.redis.unlink(*batch))
        await self.redis.zrem(self.keys.sessions, session_id)
        return Deleted(keys_removed=removed)


def _retrieved(lookup: asyncio.Future[None]) -> None:
    """Marks a lookup's error as seen when every caller that awaited it was cancelled."""
    if not lookup.cancelled():
        lookup.exception()
