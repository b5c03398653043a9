"""The stream loop, without I/O: subscribe, replay, follow, dedupe, gap-fill, reconnect.

`Client.stream` and `AsyncClient.stream` are thin shells around one `StreamLoop`.
A shell asks `next_action()`, performs it, and reports what happened with `send()`,
which returns the next action:

    Subscribe     subscribe to the session channel      -> Subscribed()
    ReadReplay    read one log page (after, upto]       -> ReplayPage(envelopes)
    ReadArchive   read one archive page (after, upto]   -> ArchivePage(envelopes, available)
    WaitLive      wait up to timeout_s for a live event -> Live(e) | LiveBatch(es) | Lagged()
                                                           | Idle()
    ProbeSession  read the session's last seq           -> SessionProbed(seq or None)
    Deliver       hand the envelopes to the caller, then call next_action()
    Reconnect     drop the connection, sleep delay_s, then call next_action()
    Done          the stream is over
    Fail          raise action.error

Any I/O step may fail instead: report ConnectionLost(exc). Subscribing comes before
replaying, so nothing published in between is missed; live events the replay already
gave are dropped, and a live event that skips ahead is a gap, filled from the log.
A stream bound to one run (stop_at_finish + run_id) also probes the session when idle,
so it ends with StreamEnded, not a hang, when the session was deleted or expired. A
session found *behind* the cursor is followed for BEHIND_PATIENCE_S before it ends the
stream the same way: a Sentinel failover can take back events this stream already read
(written to the old master, not yet on its replica), and the run's worker, which still
holds them unconfirmed, writes them again with the same seqs. Only a session deleted and
started again stays behind.

With the archive on (spec.archive), a log page that does not start right after the
cursor (trimmed, expired, deleted: none at all) sends the loop to the archive for the
missing seqs first, in pages; then it reads the log again from where the archive
ended. So a session whose early runs live only in PostgreSQL replays without a gap at
the seam, in seq order, with no duplicate. An unavailable archive is asked no more at
that point: the stream goes on with what Redis has.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from producer.cursor import SeqCursor, Sequenced, Verdict
from producer.errors import StreamEnded, StreamTimeout
from producer.streamsteps import (
    ANSWERS,
    Action,
    ArchivePage,
    ConnectionLost,
    Deliver,
    Done,
    Fail,
    Idle,
    Input,
    IoAction,
    Lagged,
    Live,
    LiveBatch,
    ProbeSession,
    ReadArchive,
    ReadReplay,
    Reconnect,
    ReplayPage,
    SessionProbed,
    Subscribe,
    Subscribed,
    WaitLive,
)
from shared.backoff import SYSTEM_RANDOM, Backoff, RandomSource
from shared.runstore import REPLAY_PAGE

__all__ = [
    "BEHIND_PATIENCE_S",
    "PROBE_INTERVAL_S",
    "TICK_S",
    "Action",
    "ArchivePage",
    "ConnectionLost",
    "Deliver",
    "Done",
    "Fail",
    "Idle",
    "Input",
    "IoAction",
    "Lagged",
    "Live",
    "LiveBatch",
    "ProbeSession",
    "ReadArchive",
    "ReadReplay",
    "Reconnect",
    "ReplayPage",
    "SessionProbed",
    "StreamLoop",
    "StreamProtocolError",
    "StreamSpec",
    "Subscribe",
    "Subscribed",
    "WaitLive",
]

TICK_S = 1.0  # longest single wait for a live event: deadlines and probes are checked between

PROBE_INTERVAL_S = 5.0  # an idle run-bound stream checks at most this often that its session lives
# How long a session may stay behind the cursor (see above): well past a failover and the
# worker's next write, which a lease (15 s by default) bounds.
BEHIND_PATIENCE_S = 30.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What the caller asked for: `stream(session_id, after=…, follow=…, …)`."""

    session_id: str
    after: int = 0
    follow: bool = True
    stop_at_finish: bool = False
    run_id: str | None = None
    timeout_s: float | None = None
    archive: bool = False  # seqs the log no longer has may be read from the archive

    @property
    def run_bound(self) -> bool:
        """The stream waits for one run's `finished`, so it can tell when that never comes."""
        return self.follow and self.stop_at_finish and self.run_id is not None


class StreamProtocolError(RuntimeError):
    """A shell fed the loop an input that does not answer its last action (a bug)."""


class StreamLoop:
    """One stream's decisions: what to read, what to deliver, when to stop or reconnect."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        backoff: Backoff,
        clock: Clock = time.monotonic,
        rand: RandomSource = SYSTEM_RANDOM,
        page_size: int = REPLAY_PAGE,
        probe_interval_s: float = PROBE_INTERVAL_S,
        behind_patience_s: float = BEHIND_PATIENCE_S,
    ) -> None:
        self.spec = spec
        self.cursor = SeqCursor(
            last_seq=spec.after, stop_at_finish=spec.stop_at_finish, run_id=spec.run_id
        )
        self._backoff = backoff
        self._clock = clock
        self._rand = rand
        self._page_size = page_size
        self._probe_interval_s = probe_interval_s
        self._behind_patience_s = behind_patience_s
        self._behind_since: float | None = None  # when a probe first found the session behind
        now = clock()
        self._deadline = None if spec.timeout_s is None else now + spec.timeout_s
        self._attempt = 0  # failed connections since the last full replay
        self._probed_at: float | None = None
        self._replaying: ReadReplay | None = None
        self._archiving: ReadArchive | None = None
        # The cursor at which the archive last had nothing more: not asked again there.
        self._archive_ended_at: int | None = None
        self._gap_live: Sequenced | None = None  # the live event that revealed a gap
        self._live_rest: tuple[Sequenced, ...] = ()  # live events after it, in one batch
        self._awaiting: IoAction | None = None
        self._pending: deque[Action] = deque(self._open())

    @property
    def finished(self) -> bool:
        """True once the loop said Done or Fail."""
        return bool(self._pending) and isinstance(self._pending[0], Done | Fail)

    def next_action(self) -> Action:
        """The next thing for the shell to do (Done or Fail again once over)."""
        if not self._pending:
            raise StreamProtocolError(f"the loop waits for an answer to {self._awaiting}")
        action = self._pending[0]
        if isinstance(action, Done | Fail):
            return action
        self._pending.popleft()
        if isinstance(action, Subscribe | ReadReplay | ReadArchive | WaitLive | ProbeSession):
            self._awaiting = action
        return action

    def send(self, event: Input) -> Action:
        """Report the outcome of the last I/O action; returns the next action."""
        awaiting = self._awaiting
        if awaiting is None:
            raise StreamProtocolError(f"{event} answers no action")
        if not isinstance(event, (ConnectionLost, *ANSWERS[type(awaiting)])):
            raise StreamProtocolError(f"{event} does not answer {awaiting}")
        self._awaiting = None
        self._pending.extend(self._react(event))
        return self.next_action()

    # -- transitions ----------------------------------------------------------

    def _react(self, event: Input) -> list[Action]:
        actions: list[Action]
        match event:
            case Subscribed() | Lagged():  # after a lag too: the log has every dropped event
                actions = [self._read(self.cursor.last_seq, None)]
            case ReplayPage(envelopes):
                actions = self._on_page(envelopes)
            case ArchivePage(envelopes, available):
                actions = self._on_archive_page(envelopes, available)
            case Live(envelope):
                actions = self._on_live((envelope,))
            case LiveBatch(envelopes):
                actions = self._on_live(envelopes)
            case Idle():
                actions = self._follow(idle=True)
            case SessionProbed(last_seq):
                actions = self._on_probe(last_seq)
            case ConnectionLost(error):
                actions = self._on_lost(error)
        return actions

    def _open(self) -> list[Action]:
        """(Re)start: subscribe first when following, then replay after the cursor."""
        self._gap_live = None
        self._live_rest = ()
        return [Subscribe()] if self.spec.follow else [self._read(self.cursor.last_seq, None)]

    def _read(self, after: int, upto: int | None) -> ReadReplay:
        self._replaying = ReadReplay(after, upto, self._page_size)
        return self._replaying

    def _on_page(self, envelopes: Sequence[Sequenced]) -> list[Action]:
        request = self._replaying
        assert request is not None
        if self._archive_due(request, envelopes):
            first = envelopes[0].seq - 1 if envelopes else request.upto
            upto = first if request.upto is None or first is None else min(first, request.upto)
            self._archiving = ReadArchive(request.after, upto, request.count)
            return [self._archiving]
        actions: list[Action] = []
        fresh = self._take([e for e in envelopes if e.seq > self.cursor.last_seq])
        if fresh:
            actions.append(Deliver(fresh))
        if self.cursor.done:
            return [*actions, Done()]
        if len(envelopes) >= request.count:  # a full page: the log may hold more
            return [*actions, self._read(envelopes[-1].seq, request.upto)]
        gap_live, self._gap_live = self._gap_live, None
        if gap_live is not None and gap_live.seq > self.cursor.last_seq:
            # The log no longer holds it (trimmed or deleted): deliver what we have.
            actions.append(Deliver(self._take([gap_live])))
            if self.cursor.done:
                return [*actions, Done()]
        if not self.spec.follow:
            return [*actions, Done()]
        self._attempt = 0  # subscribed and replayed: the connection works again
        rest, self._live_rest = self._live_rest, ()
        return [*actions, *(self._on_live(rest) if rest else self._follow(idle=False))]

    def _archive_due(self, request: ReadReplay, envelopes: Sequence[Sequenced]) -> bool:
        """The log lacks seqs right after the cursor, and the archive may hold them."""
        if not self.spec.archive or self._archive_ended_at == request.after:
            return False
        if request.upto is not None and request.upto <= request.after:
            return False
        return not envelopes or envelopes[0].seq > request.after + 1

    def _on_archive_page(self, envelopes: Sequence[Sequenced], available: bool) -> list[Action]:
        request = self._archiving
        replaying = self._replaying
        assert request is not None and replaying is not None
        actions: list[Action] = []
        fresh = self._take([e for e in envelopes if e.seq > self.cursor.last_seq])
        if fresh:
            actions.append(Deliver(fresh))
        if self.cursor.done:
            return [*actions, Done()]
        more = available and len(envelopes) >= request.count
        if more and (request.upto is None or envelopes[-1].seq < request.upto):
            self._archiving = ReadArchive(envelopes[-1].seq, request.upto, request.count)
            return [*actions, self._archiving]
        # The archive gave what it has up to the log's start: back to the log from here.
        self._archiving = None
        self._archive_ended_at = self.cursor.last_seq
        return [*actions, self._read(self.cursor.last_seq, replaying.upto)]

    def _take(self, envelopes: Sequence[Sequenced]) -> tuple[Sequenced, ...]:
        """Advance the cursor over envelopes; the ones to deliver (up to the stopping point)."""
        return tuple(envelopes[: self.cursor.take(envelopes)])

    def _on_live(self, envelopes: Sequence[Sequenced]) -> list[Action]:
        """Live events in the order they came: duplicates dropped, the others delivered in
        one batch up to a gap (filled from the log; the rest waits for the replay) or the
        stopping point."""
        delivered: list[Sequenced] = []
        for index, envelope in enumerate(envelopes):
            verdict = self.cursor.judge(envelope)
            if verdict is Verdict.DUPLICATE:
                continue
            if verdict is Verdict.GAP:  # a live event was missed: the log has it
                self._gap_live = envelope
                self._live_rest = tuple(envelopes[index + 1 :])
                read = self._read(self.cursor.last_seq, envelope.seq)
                return [Deliver(tuple(delivered)), read] if delivered else [read]
            self.cursor.delivered(envelope)
            delivered.append(envelope)
            if self.cursor.done:
                return [Deliver(tuple(delivered)), Done()]
        follow = self._follow(idle=False)
        return [Deliver(tuple(delivered)), *follow] if delivered else follow

    def _follow(self, *, idle: bool) -> list[Action]:
        now = self._clock()
        if self._deadline is not None and now >= self._deadline:
            timeout = StreamTimeout("the stream reached its time limit before its stopping point")
            return [Fail(timeout)]
        if self.spec.run_bound and self._probe_due(now, idle):
            return [ProbeSession()]
        wait_s = TICK_S if self._deadline is None else min(TICK_S, self._deadline - now)
        return [WaitLive(wait_s)]

    def _probe_due(self, now: float, idle: bool) -> bool:
        if self._probed_at is None:  # right after the first replay: a deleted session ends now
            return True
        return idle and now - self._probed_at >= self._probe_interval_s

    def _on_probe(self, last_seq: int | None) -> list[Action]:
        now = self._probed_at = self._clock()
        if last_seq is None:  # gone: this run's finished never comes
            ended = StreamEnded(
                f"session {self.spec.session_id} was deleted or expired before run "
                f"{self.spec.run_id} finished (last seq seen: {self.cursor.last_seq})"
            )
            return [Fail(ended)]
        if last_seq < self.cursor.last_seq:  # taken back by a failover, or started again
            if self._behind_since is None:
                self._behind_since = now
            if now - self._behind_since < self._behind_patience_s:
                return self._follow(idle=False)
            ended = StreamEnded(
                f"session {self.spec.session_id} went back to seq {last_seq} and stayed "
                f"there for {self._behind_patience_s:g} s, so run {self.spec.run_id} "
                f"cannot finish in this stream (last seq seen: {self.cursor.last_seq}; "
                "deleted and started again?)"
            )
            return [Fail(ended)]
        self._behind_since = None
        if last_seq > self.cursor.last_seq:  # events we did not hear about: fetch them
            return [self._read(self.cursor.last_seq, last_seq)]
        return self._follow(idle=False)

    def _on_lost(self, error: Exception) -> list[Action]:
        delay_s = self._backoff.next_delay(self._attempt, self._rand)
        self._attempt += 1
        if self._deadline is not None and self._clock() + delay_s > self._deadline:
            return [Fail(error)]
        return [Reconnect(delay_s, error), *self._open()]
