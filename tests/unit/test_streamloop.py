"""Unit tests for producer.streamloop: every transition, with a fake clock and no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.errors import StreamEnded, StreamTimeout
from producer.streamloop import (
    BEHIND_PATIENCE_S,
    TICK_S,
    Action,
    ConnectionLost,
    Deliver,
    Done,
    Fail,
    Idle,
    Input,
    Lagged,
    Live,
    LiveBatch,
    ProbeSession,
    ReadReplay,
    Reconnect,
    ReplayPage,
    SessionProbed,
    StreamLoop,
    StreamProtocolError,
    StreamSpec,
    Subscribe,
    Subscribed,
    WaitLive,
)
from shared.backoff import Backoff
from shared.events import Envelope, EventType

RUN_A = "a" * 32
RUN_B = "b" * 32
PAGE = 3
PROBE_S = 5.0
# No jitter: attempt n waits exactly min(max_s, first_s * 2**n).
BACKOFF = Backoff(first_s=0.1, max_s=0.4, jitter=0.0)


def env(seq: int, event_type: EventType = EventType.TEXT, run_id: str = RUN_A) -> Envelope:
    data = {"status": "succeeded", "duration_s": 1.0} if event_type is EventType.FINISHED else {}
    return Envelope(seq=seq, session_id="s1", run_id=run_id, ts=0.0, type=event_type, data=data)


def seqs(action: Action) -> list[int]:
    assert isinstance(action, Deliver), action
    return [e.seq for e in action.envelopes]


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A loop plus its clock; `feed` sends an input and collects the actions up to the next I/O."""

    loop: StreamLoop
    clock: Clock
    delivered: list[int] = field(default_factory=list)

    def feed(self, event: object) -> list[Action]:
        actions = [self.loop.send(event)]  # type: ignore[arg-type]
        while isinstance(actions[-1], Deliver | Reconnect):
            actions.append(self.loop.next_action())
        for action in actions:
            if isinstance(action, Deliver):
                self.delivered.extend(e.seq for e in action.envelopes)
        return actions


def make(
    *,
    after: int = 0,
    follow: bool = True,
    stop_at_finish: bool = False,
    run_id: str | None = None,
    timeout_s: float | None = None,
) -> tuple[Harness, Action]:
    clock = Clock()
    spec = StreamSpec("s1", after, follow, stop_at_finish, run_id, timeout_s)
    loop = StreamLoop(spec, backoff=BACKOFF, clock=clock, page_size=PAGE, probe_interval_s=PROBE_S)
    return Harness(loop, clock), loop.next_action()


def following(**kwargs: object) -> Harness:
    """A loop that subscribed and replayed an empty log: it now waits for live events."""
    harness, first = make(**kwargs)  # type: ignore[arg-type]
    assert first == Subscribe()
    assert harness.feed(Subscribed()) == [ReadReplay(harness.loop.cursor.last_seq, None, PAGE)]
    actions = harness.feed(ReplayPage([]))
    if actions == [ProbeSession()]:
        actions = harness.feed(SessionProbed(harness.loop.cursor.last_seq))
    assert actions == [WaitLive(TICK_S)]
    return harness


# -- opening and replay -------------------------------------------------------


def test_a_following_stream_subscribes_before_it_replays() -> None:
    harness, first = make(after=4)
    assert first == Subscribe()
    assert harness.feed(Subscribed()) == [ReadReplay(4, None, PAGE)]


def test_a_history_reads_without_subscribing_and_ends_after_the_log() -> None:
    harness, first = make(after=2, follow=False)
    assert first == ReadReplay(2, None, PAGE)
    actions = harness.feed(ReplayPage([env(3), env(4)]))
    assert [seqs(actions[0]), actions[1]] == [[3, 4], Done()]
    assert harness.loop.finished
    assert harness.loop.next_action() == Done()  # stays over


def test_an_empty_history_is_done_without_delivering() -> None:
    harness, _ = make(follow=False)
    assert harness.feed(ReplayPage([])) == [Done()]


def test_a_full_page_asks_for_the_next_one_after_its_last_seq() -> None:
    harness, _ = make(follow=False)
    actions = harness.feed(ReplayPage([env(1), env(2), env(3)]))
    assert seqs(actions[0]) == [1, 2, 3]
    assert actions[1] == ReadReplay(3, None, PAGE)
    assert harness.feed(ReplayPage([env(4)]))[-1] == Done()
    assert harness.delivered == [1, 2, 3, 4]


def test_replayed_events_at_or_before_the_cursor_are_dropped() -> None:
    harness, _ = make(after=2, follow=False)
    harness.feed(ReplayPage([env(2), env(3)]))
    assert harness.delivered == [3]


def test_replay_stops_at_the_finish_and_delivers_nothing_after_it() -> None:
    harness, _ = make(stop_at_finish=True)
    harness.feed(Subscribed())
    actions = harness.feed(ReplayPage([env(1), env(2, EventType.FINISHED), env(3)]))
    assert [seqs(actions[0]), actions[1]] == [[1, 2], Done()]


def test_another_runs_finish_does_not_stop_a_run_bound_stream() -> None:
    harness, _ = make(stop_at_finish=True, run_id=RUN_A)
    harness.feed(Subscribed())
    actions = harness.feed(ReplayPage([env(1, EventType.FINISHED, RUN_B), env(2)]))
    assert seqs(actions[0]) == [1, 2]
    assert actions[1] == ProbeSession()


# -- following: deliver, duplicate, gap, lag ------------------------------------


def test_the_next_live_event_is_delivered_and_the_wait_goes_on() -> None:
    harness = following()
    actions = harness.feed(Live(env(1)))
    assert [seqs(actions[0]), actions[1]] == [[1], WaitLive(TICK_S)]


def test_a_live_duplicate_of_the_replay_is_dropped() -> None:
    harness = following(after=5)
    assert harness.feed(Live(env(5))) == [WaitLive(TICK_S)]
    assert harness.delivered == []


def test_a_live_event_that_skips_ahead_is_a_gap_filled_from_the_log() -> None:
    harness = following(after=1)
    assert harness.feed(Live(env(4))) == [ReadReplay(1, 4, PAGE)]
    actions = harness.feed(ReplayPage([env(2), env(3), env(4)]))
    assert actions[-1] == ReadReplay(4, 4, PAGE)  # a full page: ask again
    assert harness.feed(ReplayPage([])) == [WaitLive(TICK_S)]
    assert harness.delivered == [2, 3, 4]


def test_a_gap_the_log_cannot_fill_still_delivers_the_live_event() -> None:
    harness = following(after=1)
    harness.feed(Live(env(4)))
    actions = harness.feed(ReplayPage([]))  # trimmed or deleted: the log lacks 2..4
    assert [seqs(actions[0]), actions[1]] == [[4], WaitLive(TICK_S)]


def test_a_gap_ending_in_the_finish_stops_the_stream() -> None:
    harness = following(stop_at_finish=True)
    harness.feed(Live(env(3, EventType.FINISHED)))
    actions = harness.feed(ReplayPage([env(1), env(2)]))
    assert [seqs(actions[0]), seqs(actions[1]), actions[2]] == [[1, 2], [3], Done()]


def test_a_live_batch_is_delivered_at_once_without_its_duplicates() -> None:
    harness = following(after=2)
    actions = harness.feed(LiveBatch([env(2), env(3), env(3), env(4)]))
    assert [seqs(actions[0]), actions[1]] == [[3, 4], WaitLive(TICK_S)]
    assert harness.feed(LiveBatch([env(3), env(4)])) == [WaitLive(TICK_S)]  # all seen


def test_a_gap_inside_a_live_batch_is_filled_before_the_rest_of_the_batch() -> None:
    harness = following(after=1)
    actions = harness.feed(LiveBatch([env(2), env(5), env(6), env(5)]))
    assert [seqs(actions[0]), actions[1]] == [[2], ReadReplay(2, 5, PAGE)]
    actions = harness.feed(ReplayPage([env(3), env(4), env(5)]))
    assert actions[-1] == ReadReplay(5, 5, PAGE)  # a full page: ask again
    assert harness.feed(ReplayPage([])) == [Deliver((env(6),)), WaitLive(TICK_S)]
    assert harness.delivered == [2, 3, 4, 5, 6]


def test_the_rest_of_a_batch_after_an_unfillable_gap_follows_the_gap_event() -> None:
    harness = following(after=1)
    harness.feed(LiveBatch([env(4), env(5), env(7)]))
    actions = harness.feed(ReplayPage([]))  # the log lacks 2..4: 4 comes from live
    assert [seqs(actions[0]), seqs(actions[1]), actions[2]] == [[4], [5], ReadReplay(5, 7, PAGE)]
    assert harness.feed(ReplayPage([env(6), env(7)]))[-1] == WaitLive(TICK_S)
    assert harness.delivered == [4, 5, 6, 7]


def test_a_finish_inside_a_live_batch_stops_the_stream_there() -> None:
    harness = following(stop_at_finish=True, run_id=RUN_A)
    actions = harness.feed(LiveBatch([env(1), env(2, EventType.FINISHED), env(3)]))
    assert [seqs(actions[0]), actions[1]] == [[1, 2], Done()]


def test_a_reconnect_forgets_the_rest_of_a_batch_held_for_a_gap() -> None:
    harness = following(after=1)
    harness.feed(LiveBatch([env(4), env(5)]))
    harness.feed(ConnectionLost(ConnectionError("down")))
    harness.feed(Subscribed())
    actions = harness.feed(ReplayPage([env(2)]))
    assert harness.delivered == [2]  # the log's; the held 4 and 5 went with the connection
    assert actions[-1] == WaitLive(TICK_S)


def test_a_live_finish_stops_the_stream() -> None:
    harness = following(stop_at_finish=True)
    actions = harness.feed(Live(env(1, EventType.FINISHED)))
    assert [seqs(actions[0]), actions[1]] == [[1], Done()]


def test_without_stop_at_finish_a_finish_is_just_delivered() -> None:
    harness = following()
    assert harness.feed(Live(env(1, EventType.FINISHED)))[-1] == WaitLive(TICK_S)


def test_a_lagging_stream_replays_everything_after_its_cursor() -> None:
    harness = following(after=3)
    assert harness.feed(Lagged()) == [ReadReplay(3, None, PAGE)]
    harness.feed(ReplayPage([env(4), env(5)]))
    assert harness.feed(Live(env(5))) == [WaitLive(TICK_S)]  # already replayed
    assert harness.delivered == [4, 5]


def test_an_idle_wait_waits_again() -> None:
    harness = following()
    assert harness.feed(Idle()) == [WaitLive(TICK_S)]


# -- deadlines --------------------------------------------------------------


def test_waits_are_cut_to_the_deadline_and_then_time_out() -> None:
    harness = following(timeout_s=2.5)
    harness.clock.now += 2.0
    (wait,) = harness.feed(Idle())
    assert isinstance(wait, WaitLive)
    assert wait.timeout_s == pytest.approx(0.5)
    harness.clock.now += 0.5
    (fail,) = harness.feed(Idle())
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, StreamTimeout)
    assert harness.loop.finished


def test_a_busy_stream_times_out_too() -> None:
    harness = following(timeout_s=1.0)
    harness.clock.now += 1.0
    actions = harness.feed(Live(env(1)))
    assert seqs(actions[0]) == [1]
    assert isinstance(actions[1], Fail)
    assert isinstance(actions[1].error, StreamTimeout)


# -- reconnecting -----------------------------------------------------------


def test_a_lost_connection_reconnects_with_growing_capped_delays() -> None:
    harness, _ = make()
    lost = ConnectionLost(ConnectionError("down"))
    delays = []
    for _ in range(4):
        reconnect, again = harness.feed(lost)
        assert isinstance(reconnect, Reconnect)
        assert reconnect.error is lost.error
        assert again == Subscribe()
        delays.append(reconnect.delay_s)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.4])


def test_a_full_replay_resets_the_backoff() -> None:
    harness, _ = make(after=7)
    harness.feed(ConnectionLost(ConnectionError("down")))
    harness.feed(ConnectionLost(ConnectionError("down")))
    harness.feed(Subscribed())
    harness.feed(ReplayPage([]))
    reconnect, resubscribe = harness.feed(ConnectionLost(ConnectionError("again")))
    assert isinstance(reconnect, Reconnect)
    assert reconnect.delay_s == pytest.approx(0.1)
    assert resubscribe == Subscribe()
    assert harness.feed(Subscribed()) == [ReadReplay(7, None, PAGE)]  # resume at the cursor


def test_a_reconnect_forgets_a_pending_gap_and_replays_from_the_cursor() -> None:
    harness = following(after=1)
    harness.feed(Live(env(4)))
    harness.feed(ConnectionLost(ConnectionError("down")))
    harness.feed(Subscribed())
    actions = harness.feed(ReplayPage([env(2)]))
    assert harness.delivered == [2]  # not 4: the log did not hold it, and no gap is pending
    assert actions[-1] == WaitLive(TICK_S)


def test_a_history_reconnects_by_reading_again() -> None:
    harness, _ = make(follow=False)
    harness.feed(ReplayPage([env(1), env(2), env(3)]))
    reconnect, again = harness.feed(ConnectionLost(ConnectionError("down")))
    assert isinstance(reconnect, Reconnect)
    assert again == ReadReplay(3, None, PAGE)


def test_no_reconnect_past_the_deadline_the_connection_error_is_raised() -> None:
    harness = following(timeout_s=1.0)
    harness.clock.now += 0.95
    error = ConnectionError("down")
    assert harness.feed(ConnectionLost(error)) == [Fail(error)]


# -- run-bound streams probe their session ------------------------------------


def test_a_run_bound_stream_probes_its_session_after_the_first_replay() -> None:
    harness, _ = make(after=2, stop_at_finish=True, run_id=RUN_A)
    harness.feed(Subscribed())
    assert harness.feed(ReplayPage([env(3)])) == [Deliver((env(3),)), ProbeSession()]
    assert harness.feed(SessionProbed(3)) == [WaitLive(TICK_S)]


def test_a_deleted_session_ends_a_run_bound_stream() -> None:
    harness, _ = make(after=2, stop_at_finish=True, run_id=RUN_A)
    harness.feed(Subscribed())
    harness.feed(ReplayPage([]))
    (fail,) = harness.feed(SessionProbed(None))
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, StreamEnded)
    assert RUN_A in str(fail.error)
    assert "s1" in str(fail.error)


def _behind(harness: Harness, last_seq: int) -> list[Action]:
    """Let the stream go idle for a probe interval; the probe finds `last_seq`."""
    harness.clock.now += PROBE_S
    assert harness.feed(Idle()) == [ProbeSession()]
    return harness.feed(SessionProbed(last_seq))


def test_a_session_that_stays_behind_ends_the_stream_after_the_patience() -> None:
    """Deleted and started again: the probe keeps finding it behind the cursor."""
    harness, _ = make(after=5, stop_at_finish=True, run_id=RUN_A)
    harness.feed(Subscribed())
    harness.feed(ReplayPage([]))
    assert harness.feed(SessionProbed(1)) == [WaitLive(TICK_S)]
    waited = 0.0
    while (actions := _behind(harness, 1)) == [WaitLive(TICK_S)]:
        waited += PROBE_S
        assert waited < BEHIND_PATIENCE_S
    (fail,) = actions
    assert isinstance(fail, Fail) and isinstance(fail.error, StreamEnded)
    assert waited + PROBE_S >= BEHIND_PATIENCE_S
    assert "went back to seq 1" in str(fail.error) and RUN_A in str(fail.error)


def test_events_taken_back_by_a_failover_and_written_again_are_not_repeated() -> None:
    """The new master lacks seqs 4-5 this stream saw; the worker writes them again."""
    harness = following(stop_at_finish=True, run_id=RUN_A)
    harness.feed(Live(env(1)))
    for seq in range(2, 6):
        harness.feed(Live(env(seq)))
    assert harness.delivered == [1, 2, 3, 4, 5]
    assert _behind(harness, 3) == [WaitLive(TICK_S)]  # the failover took 4 and 5 back
    harness.feed(Live(env(4)))  # written again: already delivered
    harness.feed(Live(env(5)))
    harness.feed(Live(env(6, EventType.FINISHED)))
    assert harness.delivered == [1, 2, 3, 4, 5, 6]
    assert harness.loop.finished


def test_a_session_behind_that_catches_up_resets_the_patience() -> None:
    harness = following(stop_at_finish=True, run_id=RUN_A)
    harness.feed(Live(env(1)))
    harness.feed(Live(env(2)))
    for _ in range(2):  # behind, caught up, behind again: never ended
        for _ in range(int(BEHIND_PATIENCE_S // PROBE_S) - 1):
            assert _behind(harness, 1) == [WaitLive(TICK_S)]
        assert _behind(harness, 2) == [WaitLive(TICK_S)]
    assert not harness.loop.finished


def test_a_probe_ahead_of_the_cursor_fills_the_gap_from_the_log() -> None:
    harness = following(stop_at_finish=True, run_id=RUN_A)
    harness.clock.now += PROBE_S
    assert harness.feed(Idle()) == [ProbeSession()]
    assert harness.feed(SessionProbed(2)) == [ReadReplay(0, 2, PAGE)]
    actions = harness.feed(ReplayPage([env(1), env(2, EventType.FINISHED)]))
    assert [seqs(actions[0]), actions[1]] == [[1, 2], Done()]


def test_an_idle_run_bound_stream_probes_at_most_every_interval() -> None:
    harness = following(stop_at_finish=True, run_id=RUN_A)
    harness.clock.now += PROBE_S - 0.1
    assert harness.feed(Idle()) == [WaitLive(TICK_S)]
    harness.feed(Live(env(1)))
    harness.clock.now += 0.1
    # A live event is no idle moment: the probe waits for the next idle wait.
    assert harness.feed(Live(env(2)))[-1] == WaitLive(TICK_S)
    assert harness.feed(Idle()) == [ProbeSession()]


@pytest.mark.parametrize(
    ("stop_at_finish", "run_id", "follow"),
    [(False, RUN_A, True), (True, None, True), (True, RUN_A, False)],
    ids=["no-stop", "no-run", "no-follow"],
)
def test_only_a_following_run_bound_stream_probes(
    stop_at_finish: bool, run_id: str | None, follow: bool
) -> None:
    harness, _ = make(stop_at_finish=stop_at_finish, run_id=run_id, follow=follow)
    if follow:
        harness.feed(Subscribed())
    assert harness.feed(ReplayPage([]))[-1] in (WaitLive(TICK_S), Done())


# -- protocol misuse --------------------------------------------------------


def test_an_input_that_answers_nothing_is_refused() -> None:
    harness = following()
    harness.feed(Live(env(1)))  # ends with WaitLive handed out: fine so far
    with pytest.raises(StreamProtocolError):
        harness.loop.send(Subscribed())  # a WaitLive is answered by Live, Lagged or Idle


def test_asking_twice_without_answering_is_refused() -> None:
    harness, _ = make()
    with pytest.raises(StreamProtocolError):
        harness.loop.next_action()


def test_a_finished_loop_takes_no_input() -> None:
    harness, _ = make(follow=False)
    harness.feed(ReplayPage([]))
    with pytest.raises(StreamProtocolError):
        harness.loop.send(ReplayPage([]))


# -- any interleaving -------------------------------------------------------


@dataclass
class World:
    """A session log of n events (the last one the run's finish) published one at a time."""

    log: list[Envelope]
    published: int
    channel: list[Envelope] | None = None  # live events queued for the stream, if subscribed

    def publish(self, dropped: bool, doubled: bool) -> None:
        envelope = self.log[self.published]
        self.published += 1
        if self.channel is not None and not dropped:
            self.channel.extend([envelope, envelope] if doubled else [envelope])

    def answer(self, action: Action, clock: Clock, take: int = 1) -> Input:
        """What a shell would feed back for this I/O action (`take` live events at once,
        as many as are queued, when more than one)."""
        match action:
            case Subscribe():
                self.channel = []
                return Subscribed()
            case ReadReplay():
                return ReplayPage(self.page(action))
            case WaitLive() if self.channel and take > 1:
                batch, self.channel[:take] = self.channel[:take], []
                return LiveBatch(batch)
            case WaitLive() if self.channel:
                return Live(self.channel.pop(0))
            case WaitLive():
                clock.now += TICK_S
                return Idle()
            case ProbeSession():
                return SessionProbed(self.published)
        raise AssertionError(f"not an I/O action: {action}")

    def page(self, request: ReadReplay) -> list[Envelope]:
        upto = self.published if request.upto is None else min(request.upto, self.published)
        return [e for e in self.log[request.after : upto]][: request.count]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_interleaving_delivers_exactly_one_to_n_in_order(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 25), label="n")
    other = data.draw(st.integers(0, n - 1), label="seq of another run's finish (0: none)")
    log = [
        env(seq, EventType.FINISHED, RUN_B) if seq == other else env(seq) for seq in range(1, n)
    ] + [env(n, EventType.FINISHED)]
    world = World(log, published=data.draw(st.integers(1, n), label="published before"))
    clock = Clock()
    loop = StreamLoop(
        StreamSpec("s1", 0, True, True, RUN_A, None),
        backoff=BACKOFF,
        clock=clock,
        rand=lambda: 0.5,
        page_size=data.draw(st.integers(1, 4), label="page"),
        probe_interval_s=PROBE_S,
    )
    losses = data.draw(st.integers(0, 4), label="connection drops at most")
    delivered: list[int] = []
    chance = st.integers(0, 9)  # 0, the value hypothesis shrinks towards, is the calm case
    action = loop.next_action()
    for _ in range(2000):
        # Draw only while there is something to decide: a stuck stream must fail the
        # test by running out of steps, not by running out of hypothesis's data.
        if world.published < n and data.draw(chance) < 4:  # the run goes on meanwhile
            world.publish(dropped=data.draw(chance) >= 8, doubled=data.draw(chance) >= 8)
        io = not isinstance(action, Deliver | Reconnect | Done | Fail)
        lost = losses > 0 and io and data.draw(chance) == 9
        losses -= lost
        match action:
            case Done():
                break
            case Fail(error):
                pytest.fail(f"the stream failed: {error!r}")
            case Deliver(envelopes):
                delivered.extend(e.seq for e in envelopes)
                action = loop.next_action()
            case Reconnect():
                world.channel = None
                action = loop.next_action()
            case _ if lost:
                world.channel = None
                action = loop.send(ConnectionLost(ConnectionError("dropped")))
            case WaitLive() if world.channel:
                take = data.draw(st.integers(1, 4), label="live events read at once")
                action = loop.send(world.answer(action, clock, take))
            case _:
                action = loop.send(world.answer(action, clock))
    else:
        pytest.fail("the stream never finished")
    assert delivered == list(range(1, n + 1))
