"""A lean SSE reader for the gateway benchmark's load: HTTP/1.1 over an asyncio stream,
chunked bodies undone by hand, frames split on their blank line.

Why not httpx-sse: with 1,000 streams on the same two cores as the gateway, httpx's
per-chunk machinery cost the client processes ~3x the gateway's own CPU per frame
(bench/README.md, "The gateway's load, leaner"), and that time was counted as the
gateway's latency. A browser's EventSource does this work in native code on another
machine. This reader is for the bench only: it trusts the gateway it measures and
raises on anything it does not expect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

FRAME_END = b"\r\n\r\n"  # sse-starlette ends each frame (and each line) with CRLF


class SseProtocolError(RuntimeError):
    """The gateway answered with something this reader does not expect."""


@dataclass(frozen=True, slots=True)
class Frame:
    id: bytes  # b"" when the frame has none (a comment, a heartbeat)
    event: bytes  # b"message" when the frame names none, as EventSource reads it
    data: bytes


def parse_frame(raw: bytes) -> Frame | None:
    """One frame's fields (the bytes between two blank lines); None for a comment only."""
    id_, event, data = b"", b"", []
    for line in raw.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
        elif name == b"id":
            id_ = value
    if not (id_ or event or data):
        return None
    return Frame(id_, event or b"message", b"\n".join(data))


class Dechunker:
    """Undoes HTTP/1.1 chunked transfer coding, fed as the bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes complete in what arrived so far."""
        buffer = self._buffer
        buffer += data
        out = bytearray()
        pos = 0
        while not self.ended:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                self.ended = True
                break
            start = line_end + 2
            if len(buffer) < start + size + 2:
                break
            out += buffer[start : start + size]
            pos = start + size + 2
        del buffer[:pos]
        return bytes(out)


class SseReader:
    """Frames from a body's bytes (chunked or not), as they complete."""

    def __init__(self, chunked: bool) -> None:
        self._dechunker = Dechunker() if chunked else None
        self._pending = b""

    @property
    def ended(self) -> bool:
        return self._dechunker is not None and self._dechunker.ended

    def feed(self, data: bytes) -> Iterator[Frame]:
        body = data if self._dechunker is None else self._dechunker.feed(data)
        *complete, self._pending = (self._pending + body).split(FRAME_END)
        for raw in complete:
            frame = parse_frame(raw)
            if frame is not None:
                yield frame


async def open_stream(
    url: str, headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SseReader]:
    """GET url as an event stream; returns once the response's head is read (200 only)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    lines = [
        f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: text/event-stream",
        "Cache-Control: no-cache",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        head = await reader.readuntil(FRAME_END)
    except BaseException:
        writer.close()
        raise
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if status_line.split(" ")[1:2] != ["200"]:
        writer.close()
        raise SseProtocolError(f"{url}: {status_line}")
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    chunked = fields.get("transfer-encoding", "").lower() == "chunked"
    return reader, writer, SseReader(chunked)
