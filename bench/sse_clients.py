"""The client side of the gateway benchmark: processes that follow sessions over SSE
(a lean HTTP/1.1 reader, bench/sse_wire.py) or over Redis (AsyncClient, the baseline)
and report per-event latency."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

import structlog

from bench import procs
from bench.direct import first_text
from bench.harness import PREFIX, RUN_TIMEOUT_S, LogCounter
from bench.sse_wire import SseReader, open_stream
from producer import AsyncClient
from shared.settings import Settings

QUEUE = "cqbench-gw"
API_KEY = "cqbench-gateway-key-0123456789"
READY_TIMEOUT_S = 120.0
MAX_RECONNECTS = 100
AUTH = {"Authorization": f"Bearer {API_KEY}"}
_STAMP = re.compile(r"t=(\d+);i=(\d+);")  # the fake's stamp: write time (ns), index
START_EVENTS = 5  # a run's first stamped events, reported apart (they follow its start burst)
_STAMP_JSON = re.compile(rb'"text":"t=(\d+);i=(\d+);')  # the same, in an SSE frame's data
_READ_BYTES = 65536
Sample = tuple[int, float]  # (event index in its run, write -> arrival in ms)


@dataclass(frozen=True, slots=True)
class Follow:
    """What one client process follows: `per_session` streams on each session."""

    kind: Literal["sse", "redis"]
    sessions: tuple[str, ...]
    per_session: int
    gateway_url: str
    redis_url: str


# -- client processes -------------------------------------------------------------------


def client_main(conn: Connection, spec: Follow) -> None:
    """Entry of a client process: follow, say "ready" when live, then send the results."""
    procs._term_with_parent()
    logs = LogCounter()
    structlog.configure(processors=[logs])
    try:
        result = asyncio.run(_follow_all(conn, spec))
        result["logs"] = dict(logs.counts)
        conn.send(result)
    except BaseException:
        conn.send({"error": traceback.format_exc()})


class Tally:
    """The streams of one client process: how many are live, done, reconnected."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.live = 0
        self.done = 0
        self.reconnects = 0
        self.all_live = asyncio.Event()
        self.all_done = asyncio.Event()

    def mark_live(self) -> None:
        self.live += 1
        if self.live == self.total:
            self.all_live.set()

    async def mark_done(self) -> None:
        """Streams close together, once all are done: a client leaving must not slow the
        delivery of other runs' last events (on either side) in the measurement."""
        self.done += 1
        if self.done == self.total:
            self.all_done.set()
        await self.all_done.wait()


async def _follow_all(conn: Connection, spec: Follow) -> dict[str, Any]:
    tally = Tally(len(spec.sessions) * spec.per_session)
    if spec.kind == "sse":
        urls = [f"{spec.gateway_url}/v1/sessions/{s}/events" for s in spec.sessions]
        follow = [_follow_sse(url, tally) for url in urls * spec.per_session]
        return await _measure(conn, follow, tally)
    settings = Settings(redis_url=spec.redis_url, key_prefix=PREFIX, queue_name=QUEUE)
    async with AsyncClient(settings) as client:
        sessions = list(spec.sessions) * spec.per_session
        return await _measure(conn, [_follow_redis(client, s, tally) for s in sessions], tally)


async def _measure(
    conn: Connection, follow: list[Coroutine[Any, Any, list[Sample]]], tally: Tally
) -> dict[str, Any]:
    tasks = [asyncio.ensure_future(f) for f in follow]
    waiting = asyncio.ensure_future(tally.all_live.wait())
    await asyncio.wait([waiting, *tasks], timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not tally.all_live.is_set():
        waiting.cancel()
        for task in tasks:
            task.cancel()
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        first = repr(failed[0].exception()) if failed else "none"
        raise RuntimeError(f"{tally.live} of {len(tasks)} streams live; first error: {first}")
    conn.send("ready")
    # The measuring side must not add its own pauses: a full collection of 500 streams'
    # objects took up to 0.6 s here, counted as latency. As timeit does, no automatic
    # collection while measuring (both kinds of client process alike).
    gc.collect()
    gc.disable()
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        samples = [v for per_stream in await asyncio.gather(*tasks) for v in per_stream]
    finally:
        gc.enable()
    return {
        "samples": samples,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "reconnects": tally.reconnects,
    }


@dataclass(slots=True)
class _SseState:
    """What one SSE client carries from connection to connection."""

    finished: int = 0
    last_id: bytes = b"0"


async def _follow_sse(url: str, tally: Tally) -> list[Sample]:
    """One SSE client: from seq 0 to the second `finished` (warm-up run, measured run).
    A dropped client reconnects with Last-Event-ID, as an EventSource does. The lean
    reader (bench/sse_wire.py) keeps the load's own CPU off the gateway's cores."""
    out: list[Sample] = []
    state = _SseState()
    for _attempt in range(MAX_RECONNECTS):
        writer = None
        try:
            # A stalled connection is dropped and resumed, as httpx's read timeout did.
            async with asyncio.timeout(RUN_TIMEOUT_S):
                headers = {**AUTH, "Last-Event-ID": state.last_id.decode()}
                reader, writer, frames = await open_stream(url, headers)
                await _read_frames(reader, frames, state, out, tally)
            if state.finished == 2:
                await tally.mark_done()
                return out
        except (OSError, asyncio.IncompleteReadError):  # TimeoutError is an OSError
            pass
        finally:
            if writer is not None:
                writer.close()
        tally.reconnects += 1
    raise RuntimeError(f"{url}: still not finished after {MAX_RECONNECTS} connections")


async def _read_frames(
    reader: asyncio.StreamReader,
    frames: SseReader,
    state: _SseState,
    out: list[Sample],
    tally: Tally,
) -> None:
    """Read one connection until the second `finished` or until it ends."""
    while not frames.ended:
        data = await reader.read(_READ_BYTES)
        if not data:
            return  # the connection closed
        now = time.monotonic_ns()
        for frame in frames.feed(data):
            state.last_id = frame.id or state.last_id
            if frame.event == b"message" and state.finished:
                if match := _STAMP_JSON.search(frame.data):
                    out.append((int(match[2]), (now - int(match[1])) / 1e6))
            elif frame.event == b"finished":
                state.finished += 1
                if state.finished == 2:
                    return
                tally.mark_live()


async def _follow_redis(client: AsyncClient, session: str, tally: Tally) -> list[Sample]:
    """One baseline stream through the Redis client alone, the same way."""
    out: list[Sample] = []
    finished = 0
    events = client.stream(session, after=0, timeout_s=RUN_TIMEOUT_S)
    async for envelope in events:
        now = time.monotonic_ns()
        if envelope.type == "message" and finished:
            if match := _STAMP.match(first_text(envelope.data.get("content"))):
                out.append((int(match[2]), (now - int(match[1])) / 1e6))
        elif envelope.type == "finished":
            finished += 1
            if finished == 2:
                await tally.mark_done()
                break
            tally.mark_live()
    await events.aclose()  # type: ignore[attr-defined]  # an async generator: unsubscribe now
    return out


# -- the gateway process ------------------------------------------------------------------
