"""Unit tests for worker.process.LineFramer and TailBuffer (pure byte handling)."""

from __future__ import annotations

import inspect
import itertools
import tracemalloc
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.process import Line, LineFramer, LineTooLong, TailBuffer


def feed_all(framer: LineFramer, chunks: Iterable[bytes]) -> list[Line]:
    """Feed chunks one by one, then close; a second close finds nothing left over."""
    out: list[Line] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    out.extend(framer.close())
    assert framer.close() == []
    return out


def memory_of(action: Callable[[], object]) -> tuple[int, int]:
    """Bytes `action` allocated: still held when it returned (by the framer's module and
    this file's code), and at the peak (the whole process).

    tracemalloc sees every thread: a thread another test left running once put 34 bytes
    too many into a process-wide "held" figure. Only the peak stays process-wide; its
    bound is far above what a stray thread allocates meanwhile."""
    tracemalloc.start()
    try:
        action()
        _, peak = tracemalloc.get_traced_memory()
        ours = [tracemalloc.Filter(True, inspect.getfile(LineFramer))]
        ours.append(tracemalloc.Filter(True, __file__))
        snapshot = tracemalloc.take_snapshot().filter_traces(ours)
        return sum(stat.size for stat in snapshot.statistics("filename")), peak
    finally:
        tracemalloc.stop()


def feed_in_chunks(framer: LineFramer, data: bytes, chunk_size: int) -> list[Line]:
    """Feed `data` in slices of `chunk_size` bytes (the slices are freed as we go)."""
    out: list[Line] = []
    for start in range(0, len(data), chunk_size):
        out.extend(framer.feed(data[start : start + chunk_size]))
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_line_split_across_chunks() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"type":') == []
    assert framer.feed(b'"system"') == []
    assert framer.feed(b"}\n") == [b'{"type":"system"}']
    assert framer.close() == []


def test_many_lines_in_one_chunk() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"a\nbb\n\nccc\ndd") == [b"a", b"bb", b"", b"ccc"]
    assert framer.feed(b"d\n") == [b"ddd"]


def test_close_returns_trailing_unterminated_line() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"one\ntwo") == [b"one"]
    assert framer.close() == [b"two"]
    assert framer.close() == []


def test_close_after_newline_returns_nothing() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"one\n") == [b"one"]
    assert framer.close() == []


def test_crlf_is_left_to_the_parser() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"a\r\nb\n") == [b"a\r", b"b"]


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "halves"])
def test_line_exactly_at_limit_passes(chunking: str) -> None:
    limit = 64
    data = b"x" * limit + b"\n"
    chunks = {"whole": [data], "bytewise": bytewise(data), "halves": [data[:32], data[32:]]}
    assert feed_all(LineFramer(limit), chunks[chunking]) == [b"x" * limit]


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "halves", "limit-then-rest"])
def test_one_byte_over_limit_is_line_too_long(chunking: str) -> None:
    limit = 64
    data = b"y" * (limit + 1) + b"\n"
    chunks = {
        "whole": [data],
        "bytewise": bytewise(data),
        "halves": [data[:33], data[33:]],
        "limit-then-rest": [data[:limit], data[limit:]],
    }
    assert feed_all(LineFramer(limit), chunks[chunking]) == [LineTooLong(limit + 1)]


def test_huge_line_across_many_chunks_reports_exact_size() -> None:
    limit = 1000
    size = 123_457
    data = b"z" * size + b"\n"
    chunks = [data[i : i + 777] for i in range(0, len(data), 777)]
    framer = LineFramer(limit)
    out: list[Line] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    assert out == [LineTooLong(size)]
    assert framer.close() == []


@pytest.mark.parametrize("terminated", [True, False], ids=["terminated", "unterminated"])
def test_an_oversized_line_is_never_held_in_memory(terminated: bool) -> None:
    limit, size, chunk_size = 1000, 8 * 1024 * 1024, 64 * 1024
    data = b"z" * size + (b"\n" if terminated else b"")
    framer = LineFramer(limit)
    out: list[Line] = []
    held, peak = memory_of(lambda: out.extend(feed_in_chunks(framer, data, chunk_size)))
    # A framer that kept the line would reach 8 MiB; a bounded one holds about one chunk.
    assert peak < 4 * (chunk_size + limit)
    assert held < 2 * limit
    assert [*out, *framer.close()] == [LineTooLong(size)]


def test_lines_after_oversized_line_come_through_intact() -> None:
    limit = 10
    framer = LineFramer(limit)
    out = framer.feed(b"short\n" + b"L" * 25)
    assert out == [b"short"]
    out = framer.feed(b"L" * 5 + b"\nnext\nafter")
    assert out == [LineTooLong(30), b"next"]
    assert framer.feed(b"-line\n") == [b"after-line"]
    assert framer.close() == []


def test_oversized_line_in_one_chunk_then_normal() -> None:
    framer = LineFramer(4)
    assert framer.feed(b"12345\n1234\n\n") == [LineTooLong(5), b"1234", b""]


def test_unterminated_oversized_line_at_close() -> None:
    framer = LineFramer(8)
    assert framer.feed(b"ok\n" + b"q" * 20) == [b"ok"]
    assert framer.feed(b"q" * 5) == []
    assert framer.close() == [LineTooLong(25)]
    assert framer.close() == []


def test_framer_usable_after_close() -> None:
    framer = LineFramer(8)
    framer.feed(b"q" * 20)
    assert framer.close() == [LineTooLong(20)]
    assert framer.feed(b"fresh\n") == [b"fresh"]


def test_empty_chunks_are_harmless() -> None:
    framer = LineFramer(8)
    assert framer.feed(b"") == []
    assert framer.feed(b"ab") == []
    assert framer.feed(b"") == []
    assert framer.feed(b"\n") == [b"ab"]


# --------------------------------------------------------------------------- property


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[bytes], bool, list[bytes]]:
    limit = draw(st.integers(min_value=0, max_value=16))
    lines = draw(
        st.lists(
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
            max_size=12,
        )
    )
    terminated = draw(st.booleans())
    data = b"".join(line + b"\n" for line in lines)
    if not terminated and lines:
        data = data[:-1]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    return limit, lines, terminated, chunks


@settings(max_examples=400)
@given(streams())
def test_framer_returns_exactly_the_lines(case: tuple[int, list[bytes], bool, list[bytes]]) -> None:
    limit, lines, terminated, chunks = case
    expected: list[Line] = [
        line if len(line) <= limit else LineTooLong(len(line)) for line in lines
    ]
    if not terminated and lines and lines[-1] == b"":
        expected.pop()  # an unterminated empty last line is no line at all
    assert feed_all(LineFramer(limit), chunks) == expected


# --------------------------------------------------------------------------- TailBuffer


def test_tail_buffer_keeps_exactly_last_n_bytes() -> None:
    tail = TailBuffer(10)
    tail.write(b"0123456789abcdef")
    assert tail.text() == "6789abcdef"
    tail.write(b"XYZ")
    assert tail.text() == "9abcdefXYZ"


def test_tail_buffer_shorter_than_limit() -> None:
    tail = TailBuffer(10)
    assert tail.text() == ""
    tail.write(b"abc")
    assert tail.text() == "abc"


def test_tail_buffer_memory_is_bounded() -> None:
    tail = TailBuffer(100)

    def write_a_lot() -> None:
        for _ in range(100_000):
            tail.write(b"x" * 37)

    # All of it would be 3.7 MB; the buffer keeps at most about twice its limit.
    held, _peak = memory_of(write_a_lot)
    assert held < 4096
    assert tail.text() == "x" * 100


def test_tail_buffer_decodes_invalid_utf8_without_raising() -> None:
    tail = TailBuffer(3)
    tail.write("é".encode() * 3)  # 6 bytes; the last 3 start mid-character
    assert tail.text() == "\ufffdé"


@settings(max_examples=200)
@given(st.integers(1, 64), st.lists(st.binary(max_size=50), max_size=20))
def test_tail_buffer_property(limit: int, chunks: list[bytes]) -> None:
    ascii_chunks = [bytes(b % 128 for b in chunk) for chunk in chunks]
    tail = TailBuffer(limit)
    for chunk in ascii_chunks:
        tail.write(chunk)
    assert tail.text() == b"".join(ascii_chunks)[-limit:].decode()
