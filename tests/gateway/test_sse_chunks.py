"""A frame has ServerSentEvent's exact bytes (the hub's clients: tests/gateway/test_hub.py)."""

from __future__ import annotations

from sse_starlette import ServerSentEvent

from gateway.sse import encode_frame
from shared.events import Envelope

RUN = "r" * 32


def _envelope(seq: int, type_: str = "text", data: dict[str, object] | None = None) -> Envelope:
    return Envelope(seq=seq, session_id="s", run_id=RUN, ts=1.25, type=type_, data=data or {})


def _reference(envelope: Envelope) -> bytes:
    sse = ServerSentEvent(
        data=envelope.model_dump_json(), event=str(envelope.type), id=str(envelope.seq)
    )
    return sse.encode()


def test_a_frame_has_the_bytes_of_a_server_sent_event() -> None:
    samples = [
        _envelope(1),
        _envelope(7, "finished", {"status": "ok", "text": "two\nlines\r\nand é ✓"}),
        _envelope(8, "a-newer-type", {"nested": {"list": [1, 2.5, None]}}),
        _envelope(9, "broken\ntype", {"x": "\u2028"}),
    ]
    for envelope in samples:
        assert encode_frame(envelope) == _reference(envelope)
    assert encode_frame(samples[0]).startswith(b"id: 1\r\nevent: text\r\ndata: {")
    assert b"\n\n" not in encode_frame(samples[1])[:-4]  # the JSON's newlines are escaped
