"""The asyncio I/O shell of a StreamLoop (producer/streamloop.py decides; this reads
Redis and the archive and sleeps as it says). AsyncClient.stream and .history run on it;
producer/streamio.py is the same shell for the sync client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis
import structlog

from producer import streamloop as sl
from producer.fanout import LOST, Subscription
from shared.backoff import reconnect_backoff
from shared.events import Envelope
from shared.forwarded import Forwarded

if TYPE_CHECKING:
    from producer.aio import AsyncClient

log = structlog.get_logger(__name__)

# Live events handed to the loop at once, at most (see _held_live).
_LIVE_BATCH = 16


def deliveries(client: AsyncClient, spec: sl.StreamSpec) -> AsyncGenerator[tuple[Envelope, ...]]:
    """What a StreamLoop delivers, a batch at a time, its I/O done here."""
    return _deliveries(client, spec, forward=False)


def forwarded_deliveries(
    client: AsyncClient, spec: sl.StreamSpec
) -> AsyncGenerator[tuple[Forwarded, ...]]:
    """deliveries of a replay (no live part) whose envelopes are only passed on: each
    validated, its `data` not decoded (shared/forwarded.py)."""
    if spec.follow:
        raise ValueError("forwarded envelopes are for replays: follow=False")
    return _deliveries(client, spec, forward=True)


async def _deliveries(
    client: AsyncClient, spec: sl.StreamSpec, *, forward: bool
) -> AsyncGenerator[tuple[Any, ...]]:
    spec = replace(spec, archive=client.archive is not None)
    loop = sl.StreamLoop(spec, backoff=reconnect_backoff(client.settings))
    subscription: Subscription | None = None
    try:
        action = loop.next_action()
        while True:
            match action:
                case sl.Deliver(envelopes):
                    yield envelopes
                    action = loop.next_action()
                case sl.Reconnect(delay_s, error):
                    log.warning("stream_reconnect", error=str(error), retry_in_s=delay_s)
                    await _unsubscribed(client, subscription)
                    subscription = None
                    await asyncio.sleep(delay_s)
                    action = loop.next_action()
                case sl.Subscribe():
                    try:
                        channel = client.keys.channel(spec.session_id)
                        subscription = await client.fanout.open(channel)
                        action = loop.send(sl.Subscribed())
                    except (redis.ConnectionError, redis.TimeoutError) as exc:
                        action = loop.send(sl.ConnectionLost(exc))
                case sl.ReadReplay() | sl.ReadArchive() | sl.WaitLive() | sl.ProbeSession():
                    answer = await _io(client, spec.session_id, action, subscription, forward)
                    action = loop.send(answer)
                case sl.Done():
                    return
                case sl.Fail(error):
                    raise error
    finally:
        await _unsubscribed(client, subscription)


async def _io(
    client: AsyncClient,
    session_id: str,
    action: sl.ReadReplay | sl.ReadArchive | sl.WaitLive | sl.ProbeSession,
    subscription: Subscription | None,
    forward: bool,
) -> sl.Input:
    """Perform one I/O action of a StreamLoop; a dropped connection is an answer too."""
    try:
        match action:
            case sl.ReadReplay(after, upto, count):
                read = client.store.forward_page if forward else client.store.replay_page
                return sl.ReplayPage(await read(session_id, after, upto, count))
            case sl.ReadArchive():
                return await _archive_page(client, session_id, action, forward)
            case sl.WaitLive(timeout_s):
                assert subscription is not None
                return await _wait_live(subscription, timeout_s)
            case sl.ProbeSession():
                return sl.SessionProbed(await client.store.last_seq(session_id))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return sl.ConnectionLost(exc)


async def _archive_page(
    client: AsyncClient, session_id: str, read: sl.ReadArchive, forward: bool
) -> sl.ArchivePage[Any]:
    assert client.archive is not None
    page = await client.archive.replay_page(session_id, read.after, read.upto, read.count)
    if page is None:
        return sl.ArchivePage([], available=False)
    if forward:  # the archive's come decoded anyway
        return sl.ArchivePage([Forwarded.of(envelope) for envelope in page])
    return sl.ArchivePage(page)


async def _unsubscribed(client: AsyncClient, subscription: Subscription | None) -> None:
    """Leave the fan-out, if this stream joined it."""
    if subscription is not None:
        await client.fanout.close(subscription)


async def _wait_live(subscription: Subscription, timeout_s: float) -> sl.Input:
    if subscription.lagging:  # live events were dropped: the log has them
        subscription.lagging = False
        return sl.Lagged()
    live = await next_live(subscription, timeout_s)
    if live is None:
        return sl.Idle()
    more = _held_live(subscription)
    return sl.LiveBatch([live, *more]) if more else sl.Live(live)


def _held_live(subscription: Subscription) -> list[Envelope]:
    """Up to _LIVE_BATCH - 1 more live events already queued for the stream, decoded: a
    few, so that one stream's burst does not hold up the others (a stream yields to the
    loop between batches). Stops before a message that does not decode or LOST, which
    the next read meets as ever."""
    queue = subscription.queue
    held: list[Envelope] = []
    waiting = queue._queue  # type: ignore[attr-defined]  # asyncio.Queue's deque: peeked
    while waiting and len(held) < _LIVE_BATCH - 1:
        message = waiting[0]
        if message is LOST:
            break
        try:
            envelope = message.envelope()
        except ValueError:
            break
        queue.get_nowait()
        held.append(envelope)
    return held


async def next_live(subscription: Subscription, timeout_s: float) -> Envelope | None:
    """The next live event, None after timeout_s; raises if the connection was lost."""
    queue = subscription.queue
    if queue.empty():  # else no timer: under load the next message is usually there
        try:
            async with asyncio.timeout(timeout_s):
                message = await queue.get()
        except TimeoutError:
            return None
    else:
        message = queue.get_nowait()
    if message is LOST:
        raise redis.ConnectionError("the pub/sub connection was lost")
    return message.envelope()
