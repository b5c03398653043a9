"""The sync I/O shell of a StreamLoop (producer/streamloop.py decides; this reads Redis
and the archive and sleeps as it says). Client.stream and Client.history run on it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis
import structlog
from redis.client import PubSub

from producer import pubsubread
from producer import streamloop as sl
from producer.cursor import data_seen_before, live_envelope, seen_before
from shared.backoff import reconnect_backoff
from shared.connection import subscribe_confirmed
from shared.events import Envelope

if TYPE_CHECKING:
    from producer.client import Client

log = structlog.get_logger(__name__)

# Live events handed to the loop at once, at most (the rest stay held for the next read).
_LIVE_BATCH = 256


def deliveries(client: Client, spec: sl.StreamSpec) -> Generator[tuple[Envelope, ...]]:
    """What a StreamLoop delivers, a batch at a time, its I/O done here."""
    spec = replace(spec, archive=client.archive is not None)
    loop = sl.StreamLoop(spec, backoff=reconnect_backoff(client.settings))
    session_id = spec.session_id
    pubsub: PubSub | None = None
    # Messages taken from the pub/sub connection, not yet given to the loop.
    backlog: deque[Any] = deque()
    try:
        action = loop.next_action()
        while True:
            match action:
                case sl.Deliver(envelopes):
                    yield envelopes
                    action = loop.next_action()
                case sl.Reconnect(delay_s, error):
                    log.warning("stream_reconnect", error=str(error), retry_in_s=delay_s)
                    _closed(pubsub)
                    pubsub = None
                    backlog.clear()  # the loop replays from the log after it subscribes
                    time.sleep(delay_s)
                    action = loop.next_action()
                case sl.Subscribe():
                    pubsub = client.redis.pubsub()
                    action = loop.send(_io(client, session_id, action, pubsub, backlog, 0))
                case sl.ReadReplay() | sl.ReadArchive() | sl.WaitLive() | sl.ProbeSession():
                    last_seq = loop.cursor.last_seq
                    action = loop.send(_io(client, session_id, action, pubsub, backlog, last_seq))
                case sl.Done():
                    return
                case sl.Fail(error):
                    raise error
    finally:
        _closed(pubsub)


def _io(
    client: Client,
    session_id: str,
    action: sl.IoAction,
    pubsub: PubSub | None,
    backlog: deque[Any],
    last_seq: int,
) -> sl.Input:
    """Perform one I/O action of a StreamLoop; a dropped connection is an answer too.
    `last_seq` is the loop's cursor: live messages up to it are duplicates."""
    try:
        match action:
            case sl.Subscribe():
                assert pubsub is not None
                subscribe_confirmed(pubsub, client.keys.channel(session_id))
                return sl.Subscribed()
            case sl.ReadReplay(after, upto, count):
                return sl.ReplayPage(client.store.replay_page(session_id, after, upto, count))
            case sl.ReadArchive(after, upto, count):
                assert client.archive is not None
                page = client.archive.replay_page(session_id, after, upto, count)
                return sl.ArchivePage(page or [], available=page is not None)
            case sl.WaitLive(timeout_s):
                assert pubsub is not None
                return _wait_live(pubsub, backlog, timeout_s, last_seq)
            case sl.ProbeSession():
                return sl.SessionProbed(client.store.last_seq(session_id))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return sl.ConnectionLost(exc)


def _next_message(pubsub: PubSub, backlog: deque[Any], timeout_s: float) -> Any:
    """The next pub/sub message: the oldest of those already taken from the connection,
    else the next one received (and with it, every complete message its read brought
    along)."""
    if not backlog:
        message = pubsubread.receive(pubsub, timeout_s)
        if message is not None:
            backlog.extend(pubsubread.buffered(pubsub))  # they come after it
        return message
    taken = backlog.popleft()
    if isinstance(taken, pubsubread.Published):
        return taken.as_message()
    return pubsub.handle_message(taken)  # type: ignore[no-untyped-call]


def _wait_live(pubsub: PubSub, backlog: deque[Any], timeout_s: float, last_seq: int) -> sl.Input:
    message = _next_message(pubsub, backlog, timeout_s)
    # What a stream read from the log while catching up it hears again live: passed
    # over undecoded, as long as more are waiting (Idle if none).
    while seen_before(message, last_seq):
        message = _next_message(pubsub, backlog, 0)
    live = live_envelope(message)
    if live is None:
        return sl.Idle()
    if not backlog:
        return sl.Live(live)
    return sl.LiveBatch(_with_held(live, backlog, last_seq))


def _with_held(first: Envelope, backlog: deque[Any], last_seq: int) -> list[Envelope]:
    """`first`, then the published messages already held behind it, decoded, up to one
    that is anything else (a confirmation, or one that does not decode: left where it
    is, for the next read to take as it takes any message)."""
    batch = [first]
    while backlog and len(batch) < _LIVE_BATCH:
        held = backlog[0]
        if not isinstance(held, pubsubread.Published):
            break
        if not data_seen_before(held.data, last_seq):
            try:
                batch.append(Envelope.from_json(held.data))
            except ValueError:
                break
        backlog.popleft()
    return batch


def _closed(pubsub: PubSub | None) -> None:
    """Close a stream's pub/sub connection, if it has one."""
    if pubsub is not None:
        pubsub.close()
