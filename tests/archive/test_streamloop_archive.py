"""StreamLoop with the archive as a source (pure: no I/O, a log and an archive as lists)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.streamloop import (
    ArchivePage,
    Deliver,
    Done,
    Idle,
    Input,
    ReadArchive,
    ReadReplay,
    ReplayPage,
    StreamLoop,
    StreamSpec,
    Subscribe,
    Subscribed,
    WaitLive,
)
from shared.backoff import Backoff
from shared.events import Envelope

RUN = "a" * 32


def _env(seq: int) -> Envelope:
    return Envelope(seq=seq, session_id="s", run_id=RUN, ts=float(seq), type="text", data={})


def _drive(
    log: list[int], archived: list[int], *, page: int, after: int = 0, available: bool = True
) -> tuple[list[int], int]:
    """Run a non-following loop over a log and an archive; (seqs delivered, archive reads)."""
    spec = StreamSpec("s", after=after, follow=False, archive=True)
    loop = StreamLoop(spec, backoff=Backoff(), page_size=page)
    delivered: list[int] = []
    archive_reads = 0
    action = loop.next_action()
    for _ in range(10_000):
        answer: Input
        match action:
            case Deliver(envelopes):
                delivered += [e.seq for e in envelopes]
                action = loop.next_action()
                continue
            case Done():
                return delivered, archive_reads
            case ReadReplay(a, upto, count):
                seqs = [s for s in log if s > a and (upto is None or s <= upto)][:count]
                answer = ReplayPage([_env(s) for s in seqs])
            case ReadArchive(a, upto, count):
                archive_reads += 1
                seqs = [s for s in archived if s > a and (upto is None or s <= upto)][:count]
                answer = ArchivePage([_env(s) for s in seqs] if available else [], available)
            case _:
                raise AssertionError(f"unexpected {action}")
        action = loop.send(answer)
    raise AssertionError("the loop never ended")


def test_the_archive_fills_the_seqs_the_log_lost_and_the_log_follows_on() -> None:
    delivered, reads = _drive(list(range(8, 21)), list(range(1, 12)), page=3)
    assert delivered == list(range(1, 21))
    assert reads == 3  # 1-3, 4-6, 7 (the page stops where the log starts)


def test_no_log_at_all_replays_the_archive() -> None:
    assert _drive([], list(range(1, 8)), page=3)[0] == list(range(1, 8))


def test_a_log_from_seq_1_never_asks_the_archive() -> None:
    assert _drive(list(range(1, 10)), list(range(1, 10)), page=4) == (list(range(1, 10)), 0)


def test_an_unavailable_archive_leaves_what_redis_has() -> None:
    delivered, reads = _drive(list(range(5, 9)), list(range(1, 9)), page=3, available=False)
    assert (delivered, reads) == ([5, 6, 7, 8], 1)


def test_a_live_stream_at_the_tail_asks_once_then_follows() -> None:
    loop = StreamLoop(StreamSpec("s", after=5, archive=True), backoff=Backoff())
    assert isinstance(loop.next_action(), Subscribe)
    assert loop.send(Subscribed()) == ReadReplay(5, None, 1000)
    assert loop.send(ReplayPage([])) == ReadArchive(5, None, 1000)
    assert loop.send(ArchivePage([])) == ReadReplay(5, None, 1000)
    assert isinstance(loop.send(ReplayPage([])), WaitLive)
    assert isinstance(loop.send(Idle()), WaitLive)


@given(
    start=st.integers(1, 40),
    archived_upto=st.integers(0, 60),
    end=st.integers(1, 60),
    page=st.integers(1, 7),
    after=st.integers(0, 20),
)
def test_seqs_are_in_order_without_duplicates_and_without_a_gap_the_archive_covers(
    start: int, archived_upto: int, end: int, page: int, after: int
) -> None:
    # The session logged 1..end; the log lost its head up to `start`, and the archive
    # copied a prefix of it (never more than was logged).
    log = list(range(start, end + 1))
    archived = list(range(1, min(archived_upto, end) + 1))
    delivered, _ = _drive(log, archived, page=page, after=after)
    assert delivered == sorted(set(delivered))
    assert all(s > after for s in delivered)
    available = set(log) | set(archived)
    if (
        min(archived_upto, end) >= min(start, end + 1) - 1
    ):  # the archive reaches the log: nothing may be missing
        assert delivered == [s for s in sorted(available) if s > after]
