"""The bench's lean SSE reader (bench/sse_wire.py): frames come out whole and in order
however the chunked body is cut, into chunks and into reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.sse_wire import Dechunker, Frame, SseReader, parse_frame

_TOKENS = st.text(alphabet='abcdefghij0123456789{}":,', min_size=1, max_size=40)
_FRAMES = st.lists(
    st.builds(
        Frame,
        id=st.integers(1, 10**9).map(lambda n: str(n).encode()),
        event=st.sampled_from([b"message", b"finished", b"error"]),
        data=_TOKENS.map(str.encode),
    ),
    max_size=20,
)


def _encode(frame: Frame) -> bytes:
    return b"id: %s\r\nevent: %s\r\ndata: %s\r\n\r\n" % (frame.id, frame.event, frame.data)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = bytearray(), 0
    for size in sizes:
        piece = body[pos : pos + size]
        if not piece:
            break
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        pos += len(piece)
    if pos < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:])
    return bytes(out + b"0\r\n\r\n")


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(
    _FRAMES,
    st.lists(st.integers(1, 64), max_size=30),
    st.lists(st.integers(0, 10_000), max_size=30),
    st.booleans(),
)
def test_frames_survive_any_chunking_and_any_reads(
    frames: list[Frame], sizes: list[int], cuts: list[int], heartbeat: bool
) -> None:
    body = b"".join(_encode(f) for f in frames) + (b": heartbeat\r\n\r\n" if heartbeat else b"")
    reader = SseReader(chunked=True)
    got = [frame for part in _cut(_chunked(body, sizes), cuts) for frame in reader.feed(part)]
    assert got == frames
    assert reader.ended


def test_a_body_without_chunking_is_read_as_is() -> None:
    reader = SseReader(chunked=False)
    got = list(reader.feed(b"id: 1\r\nevent: finished\r\ndata: {}\r\n\r\nid: 2\r\n"))
    assert got == [Frame(b"1", b"finished", b"{}")]
    assert not reader.ended


def test_a_frame_without_event_is_a_message_and_a_comment_is_no_frame() -> None:
    assert parse_frame(b"id: 3\r\ndata: x") == Frame(b"3", b"message", b"x")
    assert parse_frame(b": heartbeat") is None


def test_chunk_extensions_are_ignored() -> None:
    assert Dechunker().feed(b"3;name=v\r\nabc\r\n0\r\n\r\n") == b"abc"


def test_fields_in_any_order_and_data_over_several_lines() -> None:
    # sse-starlette's own encoder (the gateway's fallback for a type with a line break)
    # writes one `data:` line per line of the data; EventSource joins them with "\n".
    raw = b"data: a\r\nevent: message\r\ndata: b\r\nid: 9"
    assert parse_frame(raw) == Frame(b"9", b"message", b"a\nb")


def test_heartbeats_between_frames_are_skipped() -> None:
    reader = SseReader(chunked=False)
    body = b": heartbeat\r\n\r\nid: 1\r\ndata: x\r\n\r\n: heartbeat\r\n\r\nid: 2\r\ndata: y\r\n\r\n"
    got = list(reader.feed(body))
    assert got == [Frame(b"1", b"message", b"x"), Frame(b"2", b"message", b"y")]


def test_a_frame_with_empty_data() -> None:
    assert parse_frame(b"id: 4\r\nevent: ping\r\ndata: ") == Frame(b"4", b"ping", b"")
