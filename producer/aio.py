"""The asyncio client, for web backends: same API as `Client`, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis

from producer import streamloop as sl
from producer.aiostream import deliveries, forwarded_deliveries, next_live
from producer.approvals import AnswerOutcome, AnswerResult, prepare_answer
from producer.cancelling import (
    CancelOutcome,
    CancelResult,
    CancelWait,
    require_grace,
    wait_limit_s,
)
from producer.client import Client
from producer.cursor import finished_of
from producer.errors import redis_errors
from producer.fanout import PubSubFanout
from producer.result import ResultCollector, RunResult, stream_ended
from producer.sessions import SessionInfo, busy_error, require_session_id
from producer.status import QueueStatus, read_status
from producer.submission import prepare, validate_job
from shared.backoff import reconnect_backoff
from shared.connection import async_redis
from shared.events import Envelope, FinishedData
from shared.forwarded import Forwarded
from shared.jobs import OnBusy, PromptJob
from shared.runstore import AsyncRunStore, Busy, OpenRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.archive import AsyncArchiveReader
    from shared.archive import SessionPage, TotalsRow

T = TypeVar("T")


class AsyncClient:
    """Asyncio client, on redis.asyncio (RQ's enqueue is recorded, then sent natively)."""

    def __init__(self, settings: Settings, connection: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = connection or async_redis(settings)
        self.store = AsyncRunStore(self.redis, settings)
        self.keys = self.store.keys
        self._sync = Client(settings)
        self.fanout = PubSubFanout(self.redis, reconnect_backoff(settings))
        self.archive: AsyncArchiveReader | None = None
        if settings.archive_enabled:  # psycopg is imported only then
            from producer.archive import AsyncArchiveReader

            self.archive = AsyncArchiveReader(settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AsyncClient:
        return cls(settings or Settings.from_environment())

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> AsyncClient:
        return cls(Settings(redis_url=url, **overrides))

    async def aclose(self) -> None:
        await self.fanout.aclose()
        await self.redis.aclose()
        self._sync.close()
        if self.archive is not None:
            await self.archive.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @redis_errors()
    async def submit(
        self, job: PromptJob | None = None, /, *, on_busy: OnBusy = "enqueue", **fields: Any
    ) -> AsyncRunHandle:
        """See `Client.submit`; raises InvalidJobError before anything is queued."""
        validated = validate_job(self.settings, job, fields)
        session_id = validated.session_id
        if on_busy == "interrupt":
            for pending_run in await self.store.pending_runs(session_id):
                await self.cancel(
                    session_id, run_id=pending_run, reason="interrupted by a newer prompt"
                )
        run = prepare(self.settings, validated)
        submitted = await self.store.submit(run, reject_if_busy=on_busy == "reject")
        if isinstance(submitted, Busy):
            raise busy_error(session_id)
        return AsyncRunHandle(self, session_id, run.run_id, submitted.queued_seq)

    @redis_errors()
    async def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        """See `Client.sessions`."""
        return await self.store.sessions(limit=limit)

    @redis_errors()
    async def session(self, session_id: str) -> SessionInfo | None:
        """See `Client.session`."""
        require_session_id(session_id)
        return await self.store.session_info(session_id)

    @redis_errors()
    async def delete_session(self, session_id: str, *, force: bool = False) -> int:
        """See `Client.delete_session`."""
        require_session_id(session_id)
        if force:
            for pending_run in await self.store.pending_runs(session_id):
                await self.cancel(
                    session_id, run_id=pending_run, wait=True, reason="session deleted"
                )
        deleted = await self.store.delete_session(session_id)
        if isinstance(deleted, Busy):
            raise busy_error(session_id, deleting=True)
        if self.archive is not None:
            await self.archive.delete_session(session_id)
        return deleted.keys_removed

    async def search_sessions(
        self,
        *,
        since: float | None = None,
        status: str | None = None,
        meta: dict[str, str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> SessionPage:
        """See `Client.search_sessions`."""
        from producer.archive import require_archive, session_filter

        require_archive(self.settings)
        query = session_filter(since=since, status=status, meta=meta, limit=limit, offset=offset)
        assert self.archive is not None
        return await self.archive.search(query)

    async def archive_totals(self, *, since: float | None = None) -> list[TotalsRow]:
        """See `Client.archive_totals`."""
        from producer.archive import require_archive

        require_archive(self.settings)
        assert self.archive is not None
        return await self.archive.totals(since)

    @redis_errors()
    async def status(self) -> QueueStatus:
        """See `Client.status`; RQ's API is synchronous, so it runs in a thread."""
        return await asyncio.to_thread(read_status, self._sync.redis, self.settings, self.keys)

    @redis_errors()
    async def history(self, session_id: str, *, after: int = 0) -> list[Envelope]:
        """Every logged event of a session after seq `after`; see `Client.history`."""
        events: list[Envelope] = []
        batches = deliveries(self, sl.StreamSpec(session_id, after, False))
        try:
            async for batch in batches:
                events.extend(batch)  # a page at a time, not an envelope at a time
        finally:
            await batches.aclose()
        return events

    @redis_errors()
    async def stream(
        self,
        session_id: str,
        *,
        after: int = 0,
        follow: bool = True,
        stop_at_finish: bool = False,
        run_id: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Envelope]:
        """Subscribe, replay after `after`, then follow; see `Client.stream`."""
        spec = sl.StreamSpec(session_id, after, follow, stop_at_finish, run_id, timeout_s)
        async with aclosing(_each(deliveries(self, spec))) as envelopes:
            async for envelope in envelopes:
                yield envelope

    @redis_errors()
    async def forward(self, session_id: str, *, after: int = 0) -> AsyncIterator[Forwarded]:
        """The session's logged events after `after` (archive included), each validated
        but its `data` left as JSON: for a reader that only passes envelopes on (the
        gateway's SSE replay). `stream(..., follow=False)` with decoded envelopes."""
        spec = sl.StreamSpec(session_id, after, follow=False)
        async with aclosing(_each(forwarded_deliveries(self, spec))) as envelopes:
            async for envelope in envelopes:
                yield envelope

    @redis_errors()
    async def cancel(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        wait: bool = False,
        timeout_s: float | None = None,
        reason: str = "cancelled by request",
        grace_s: float = 0.0,
    ) -> CancelResult:
        """See `Client.cancel`."""
        require_grace(grace_s)
        target = run_id or await self.store.current_run(session_id)
        if target is None:
            return CancelResult(CancelOutcome.NOTHING_TO_CANCEL, session_id, None)
        channel = self.keys.channel(session_id)
        subscription = await self.fanout.open(channel) if wait else None
        try:
            outcome = await self.store.cancel(session_id, target, reason=reason, grace_s=grace_s)
            if outcome is not CancelOutcome.CANCELLED_RUNNING or subscription is None:
                return CancelResult(outcome, session_id, target)
            limit = wait_limit_s(grace_s, timeout_s, self.settings.cancel_ack_timeout_s)
            waiter = CancelWait(target, limit)
            while (pause := waiter.wait_s()) is not None:
                if waiter.is_done(await next_live(subscription, pause)):
                    return CancelResult(outcome, session_id, target)
                # Re-send; the script also says if the run finished meanwhile.
                if waiter.resend_due():
                    again = await self.store.cancel(
                        session_id, target, reason=reason, grace_s=grace_s
                    )
                    if again is CancelOutcome.ALREADY_FINISHED:
                        return CancelResult(outcome, session_id, target)
            return CancelResult(CancelOutcome.OWNER_UNREACHABLE, session_id, target)
        finally:
            if subscription is not None:
                await self.fanout.close(subscription)

    @redis_errors()
    async def respond(
        self,
        session_id: str,
        request_id: str,
        *,
        allow: bool,
        message: str | None = None,
        updated_input: dict[str, Any] | None = None,
        decided_by: str | None = None,
        run_id: str | None = None,
    ) -> AnswerResult:
        """See `Client.respond`."""
        decision = prepare_answer(
            session_id,
            request_id,
            run_id,
            allow=allow,
            message=message,
            updated_input=updated_input,
            decided_by=decided_by,
        )
        target = run_id or await self.store.current_run(session_id)
        if target is None:
            return AnswerResult(AnswerOutcome.RUN_NOT_RUNNING, session_id, None, request_id)
        outcome = await self.store.decide(session_id, target, request_id, decision, notify=True)
        return AnswerResult(outcome, session_id, target, request_id)

    @redis_errors()
    async def open_requests(self, session_id: str) -> list[OpenRequest]:
        """See `Client.open_requests`."""
        require_session_id(session_id)
        return await self.store.open_requests(session_id)


@dataclass(frozen=True, slots=True)
class AsyncRunHandle:
    """A submitted run, for asyncio code: see `RunHandle`."""

    client: AsyncClient
    session_id: str
    run_id: str
    queued_seq: int

    def stream(self, *, timeout_s: float | None = None) -> AsyncIterator[Envelope]:
        """This run's session events from its `queued` event up to its `finished`."""
        return self.client.stream(
            self.session_id,
            after=self.queued_seq - 1,
            stop_at_finish=True,
            run_id=self.run_id,
            timeout_s=timeout_s,
        )

    async def wait(self, *, timeout_s: float | None = None) -> FinishedData:
        """The run's `finished` data; raises like `RunHandle.wait()`."""
        async for envelope in self.stream(timeout_s=timeout_s):
            if (finished := finished_of(envelope, self.run_id)) is not None:
                return finished
        raise stream_ended(self.run_id)

    async def result(self, *, timeout_s: float | None = None) -> RunResult:
        """The run's RunResult; see `RunHandle.result()`."""
        collector = ResultCollector(self.session_id, self.run_id)
        async for envelope in self.stream(timeout_s=timeout_s):
            collector.add(envelope)
        return collector.result()

    async def cancel(
        self, *, wait: bool = False, timeout_s: float | None = None, grace_s: float = 0.0
    ) -> CancelResult:
        """Cancel this run; see `Client.cancel`."""
        return await self.client.cancel(
            self.session_id, run_id=self.run_id, wait=wait, timeout_s=timeout_s, grace_s=grace_s
        )

    async def respond(
        self,
        request_id: str,
        *,
        allow: bool,
        message: str | None = None,
        updated_input: dict[str, Any] | None = None,
        decided_by: str | None = None,
    ) -> AnswerResult:
        """Answer a permission request of this run; see `Client.respond`."""
        return await self.client.respond(
            self.session_id,
            request_id,
            allow=allow,
            message=message,
            updated_input=updated_input,
            decided_by=decided_by,
            run_id=self.run_id,
        )


async def _each(batches: AsyncGenerator[tuple[T, ...]]) -> AsyncGenerator[T]:
    """A stream's batches one item at a time; the batches closed when this is."""
    async with aclosing(batches):
        async for batch in batches:
            for item in batch:
                yield item
