"""The synchronous client: submit, stream, history, cancel, status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import structlog
from rq import Queue
from rq.serializers import JSONSerializer

from producer import streamloop as sl
from producer.approvals import AnswerOutcome, AnswerResult, prepare_answer
from producer.cancelling import (
    CancelOutcome,
    CancelResult,
    CancelWait,
    require_grace,
    wait_limit_s,
)
from producer.cursor import finished_of, live_envelope
from producer.errors import redis_errors
from producer.result import ResultCollector, RunResult, stream_ended
from producer.sessions import SessionInfo, busy_error, require_session_id
from producer.status import QueueStatus, read_status
from producer.streamio import deliveries
from producer.submission import prepare, validate_job
from shared.connection import subscribe_confirmed, sync_redis
from shared.events import Envelope, FinishedData
from shared.gcpause import gc_paused
from shared.jobs import OnBusy, PromptJob
from shared.runstore import Busy, OpenRequest, RunStore
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.archive import ArchiveReader
    from shared.archive import SessionPage, TotalsRow

log = structlog.get_logger(__name__)


class Client:
    """Talks to claude-queue through Redis. Thread-safe like redis-py's client."""

    def __init__(self, settings: Settings, connection: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = connection or sync_redis(settings)
        self.store = RunStore(self.redis, settings)
        self.keys = self.store.keys
        self.queue = Queue(settings.queue_name, connection=self.redis, serializer=JSONSerializer)
        self.archive: ArchiveReader | None = None
        if settings.archive_enabled:  # psycopg is imported only then
            from producer.archive import ArchiveReader

            self.archive = ArchiveReader(settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Client:
        """A client from settings (default: read from CLAUDE_QUEUE_* environment)."""
        return cls(settings or Settings.from_environment())

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Client:
        """A client for this Redis URL; other settings from keyword overrides."""
        return cls(Settings(redis_url=url, **overrides))

    def close(self) -> None:
        self.redis.close()
        if self.archive is not None:
            self.archive.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- submit -------------------------------------------------------------

    @redis_errors()
    def submit(
        self, job: PromptJob | None = None, /, *, on_busy: OnBusy = "enqueue", **fields: Any
    ) -> RunHandle:
        """Validate and enqueue a prompt job; returns at once with a handle to the run.

        Raises InvalidJobError, naming each bad field, before anything is queued.
        `on_busy` decides what happens when the session already has a run pending:
        `enqueue` waits behind it, `reject` raises SessionBusy (nothing queued),
        `interrupt` cancels it (process tree and all) and then runs this one.
        """
        validated = validate_job(self.settings, job, fields)
        session_id = validated.session_id
        if on_busy == "interrupt":
            for pending_run in self.store.pending_runs(session_id):
                self.cancel(session_id, run_id=pending_run, reason="interrupted by a newer prompt")
        run = prepare(self.settings, validated)
        # One MULTI/EXEC: the job and its `queued` event appear together or not at all.
        submitted = self.store.submit(run, reject_if_busy=on_busy == "reject")
        if isinstance(submitted, Busy):
            raise busy_error(session_id)
        return RunHandle(self, session_id, run.run_id, submitted.queued_seq)

    # -- sessions -----------------------------------------------------------

    @redis_errors()
    def sessions(self, *, limit: int = 100) -> list[SessionInfo]:
        """Sessions by most recent activity, with state, last run and sizes."""
        return self.store.sessions(limit=limit)

    @redis_errors()
    def session(self, session_id: str) -> SessionInfo | None:
        """One session's state, or None if it does not exist (InvalidJobError for a bad id)."""
        require_session_id(session_id)
        return self.store.session_info(session_id)

    @redis_errors()
    def delete_session(self, session_id: str, *, force: bool = False) -> int:
        """Delete a session's log, transcript and state; returns the number of keys removed.

        With the archive on, the session's archived events and runs go too (ArchiveError
        if PostgreSQL cannot be reached: the Redis keys are gone, the archive is not).

        Refuses (SessionBusy) while a run is queued or running, unless force=True,
        which cancels those runs first. An invalid id (e.g. `*`) raises InvalidJobError
        before anything is cancelled or deleted.
        """
        require_session_id(session_id)
        if force:
            for pending_run in self.store.pending_runs(session_id):
                self.cancel(session_id, run_id=pending_run, wait=True, reason="session deleted")
        deleted = self.store.delete_session(session_id)
        if isinstance(deleted, Busy):
            raise busy_error(session_id, deleting=True)
        if self.archive is not None:
            self.archive.delete_session(session_id)
        return deleted.keys_removed

    def search_sessions(
        self,
        *,
        since: float | None = None,
        status: str | None = None,
        meta: dict[str, str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> SessionPage:
        """Archived sessions with a run that finished since `since` (epoch s), with `status`
        and whose metadata holds every `meta` pair; newest first, `limit` a page.

        Pass the page's `next_offset` as `offset` for the next page (None: no more).
        ArchiveError when the archive is off or unreachable.
        """
        from producer.archive import require_archive, session_filter

        require_archive(self.settings)
        query = session_filter(since=since, status=status, meta=meta, limit=limit, offset=offset)
        assert self.archive is not None
        return self.archive.search(query)

    def archive_totals(self, *, since: float | None = None) -> list[TotalsRow]:
        """Archived runs and their cost and tokens, by day (UTC), model and profile."""
        from producer.archive import require_archive

        require_archive(self.settings)
        assert self.archive is not None
        return self.archive.totals(since)

    # -- read ---------------------------------------------------------------

    @redis_errors()
    def history(self, session_id: str, *, after: int = 0) -> list[Envelope]:
        """Every logged event of a session after seq `after`."""
        events: list[Envelope] = []
        # Off for the whole read, not per page: the pages' raw replies trigger
        # collections too, each walking every envelope read so far (shared/gcpause.py).
        with (
            gc_paused(),
            closing(deliveries(self, sl.StreamSpec(session_id, after, False))) as pages,
        ):
            for batch in pages:
                events.extend(batch)  # a page at a time, not an envelope at a time
        return events

    @redis_errors()
    def stream(
        self,
        session_id: str,
        *,
        after: int = 0,
        follow: bool = True,
        stop_at_finish: bool = False,
        run_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[Envelope]:
        """Replay the session log after `after`, then follow live events.

        Subscribes before replaying, so a stream joined mid-run has no gap and no
        duplicate. With stop_at_finish it ends at the next `finished` event (of
        `run_id`, when given; StreamEnded if the session is deleted first).
        Reconnects by itself if Redis drops. The decisions are `StreamLoop`'s.
        """
        spec = sl.StreamSpec(session_id, after, follow, stop_at_finish, run_id, timeout_s)
        with closing(deliveries(self, spec)) as batches:
            for batch in batches:
                yield from batch

    # -- cancel -------------------------------------------------------------

    @redis_errors()
    def cancel(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        wait: bool = False,
        timeout_s: float | None = None,
        reason: str = "cancelled by request",
        grace_s: float = 0.0,
    ) -> CancelResult:
        """Cancel a run (default: the session's current one) and say what happened.

        With grace_s > 0 the owner first asks the CLI to end its turn and kills the
        process tree only if the turn has not ended within grace_s (at most
        MAX_GRACE_S; InvalidJobError otherwise). With wait=True, returns once the
        owner has ended the run, re-sending the request until then;
        `owner_unreachable` if it never does within grace_s + timeout_s.
        """
        require_grace(grace_s)
        target = run_id or self.store.current_run(session_id)
        if target is None:
            return CancelResult(CancelOutcome.NOTHING_TO_CANCEL, session_id, None)
        pubsub = self.redis.pubsub()
        try:
            if wait:
                subscribe_confirmed(pubsub, self.keys.channel(session_id))
            outcome = self.store.cancel(session_id, target, reason=reason, grace_s=grace_s)
            if outcome is not CancelOutcome.CANCELLED_RUNNING or not wait:
                return CancelResult(outcome, session_id, target)
            limit = wait_limit_s(grace_s, timeout_s, self.settings.cancel_ack_timeout_s)
            waiter = CancelWait(target, limit)
            while (pause := waiter.wait_s()) is not None:
                if waiter.is_done(live_envelope(pubsub.get_message(timeout=pause))):
                    return CancelResult(outcome, session_id, target)
                # Re-send; the script also says if the run finished meanwhile.
                if waiter.resend_due():
                    again = self.store.cancel(session_id, target, reason=reason, grace_s=grace_s)
                    if again is CancelOutcome.ALREADY_FINISHED:
                        return CancelResult(outcome, session_id, target)
            return CancelResult(CancelOutcome.OWNER_UNREACHABLE, session_id, target)
        finally:
            pubsub.close()

    # -- permission requests ------------------------------------------------

    @redis_errors()
    def respond(
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
        """Answer a permission request of the session's running run (or of `run_id`).

        Only the first decision of a request counts: a later answer (or one after
        the request timed out) is `already_decided`. A deny without a message tells
        the CLI who denied it. Bad ids or fields raise InvalidJobError, nothing sent.
        """
        decision = prepare_answer(
            session_id,
            request_id,
            run_id,
            allow=allow,
            message=message,
            updated_input=updated_input,
            decided_by=decided_by,
        )
        target = run_id or self.store.current_run(session_id)
        if target is None:
            return AnswerResult(AnswerOutcome.RUN_NOT_RUNNING, session_id, None, request_id)
        outcome = self.store.decide(session_id, target, request_id, decision, notify=True)
        return AnswerResult(outcome, session_id, target, request_id)

    @redis_errors()
    def open_requests(self, session_id: str) -> list[OpenRequest]:
        """The undecided permission requests of the session's running run, oldest expiry first."""
        require_session_id(session_id)
        return self.store.open_requests(session_id)

    # -- status -------------------------------------------------------------

    @redis_errors()
    def status(self) -> QueueStatus:
        """Queue depth, the queue's workers and the runs in progress."""
        return read_status(self.redis, self.settings, self.keys)


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A submitted run: follow it, wait for it, get its result, cancel it."""

    client: Client
    session_id: str
    run_id: str
    queued_seq: int

    def stream(self, *, timeout_s: float | None = None) -> Iterator[Envelope]:
        """This run's session events from its `queued` event up to its `finished`."""
        return self.client.stream(
            self.session_id,
            after=self.queued_seq - 1,
            stop_at_finish=True,
            run_id=self.run_id,
            timeout_s=timeout_s,
        )

    def wait(self, *, timeout_s: float | None = None) -> FinishedData:
        """Block until the run's `finished` event; return its data.

        Raises StreamTimeout after timeout_s, StreamEnded if the session is deleted first.
        """
        for envelope in self.stream(timeout_s=timeout_s):
            if (finished := finished_of(envelope, self.run_id)) is not None:
                return finished
        raise stream_ended(self.run_id)

    def result(self, *, timeout_s: float | None = None) -> RunResult:
        """Follow the run to its end: final text, status, cost, usage, duration, ids, errors.

        Raises like `wait()`.
        """
        collector = ResultCollector(self.session_id, self.run_id)
        for envelope in self.stream(timeout_s=timeout_s):
            collector.add(envelope)
        return collector.result()

    def cancel(
        self, *, wait: bool = False, timeout_s: float | None = None, grace_s: float = 0.0
    ) -> CancelResult:
        """Cancel this run; see `Client.cancel`."""
        return self.client.cancel(
            self.session_id, run_id=self.run_id, wait=wait, timeout_s=timeout_s, grace_s=grace_s
        )

    def respond(
        self,
        request_id: str,
        *,
        allow: bool,
        message: str | None = None,
        updated_input: dict[str, Any] | None = None,
        decided_by: str | None = None,
    ) -> AnswerResult:
        """Answer a permission request of this run; see `Client.respond`."""
        return self.client.respond(
            self.session_id,
            request_id,
            allow=allow,
            message=message,
            updated_input=updated_input,
            decided_by=decided_by,
            run_id=self.run_id,
        )
