"""Pub/sub messages a connection has already received, taken in one go.

redis-py hands out one pub/sub message per `get_message` call, and each call walks its
whole path (health check, connection check, timeout set-up, the message dict): ~10 us a
message, where the client's own work on an event is a few. A burst of a run's events
arrives in a few socket reads, so after one `get_message` the connection's parser
usually holds many more complete messages. `buffered` takes those straight from the
parser (hiredis's reader: ~1 us each) without reading the socket.

Only published messages (`message`, three parts, all bytes) are handed over directly.
Every other reply (a subscribe or unsubscribe confirmation, a health-check pong) is
given back as it is, for the caller to pass to the pub/sub object's `handle_message`,
which keeps redis-py's bookkeeping of its channels. An error reply ends the read as a
lost connection: the stream reconnects and replays from the log, which has every event.

What this skips for the messages it hands over: redis-py's per-message metrics hook
(`record_pubsub_message`, OpenTelemetry; a no-op unless configured) and message handlers
registered with `subscribe(channel=handler)`, which this project's clients never use.
The reader and its "not enough data" marker are redis-py's internals: with any other
parser (redis-py without hiredis, or a version that moved them) nothing is taken here
and every message goes through `get_message`, as before; tests/store/
test_pubsub_read.py fails if the fast path stops being taken.
"""

from __future__ import annotations

import math
import select
import ssl
from collections.abc import Callable
from typing import Any, Final

import redis

try:  # redis-py's internals; without them, every message takes get_message's path
    from redis._parsers import hiredis as _hiredis

    _NOT_ENOUGH_DATA: object | None = _hiredis.NOT_ENOUGH_DATA
    _PARSER: type | None = _hiredis._HiredisParser
except (ImportError, AttributeError):  # pragma: no cover - depends on redis-py
    _NOT_ENOUGH_DATA = None
    _PARSER = None

# A read takes at most this many replies before it lets its caller go on (an asyncio
# reader yields to the loop between reads); the rest are taken by the next read.
MAX_BATCH: Final = 1024


class Published:
    """A published message taken from the parser: its channel and its bytes."""

    __slots__ = ("channel", "data")

    def __init__(self, channel: bytes, data: bytes) -> None:
        self.channel = channel
        self.data = data

    def as_message(self) -> dict[str, Any]:
        """The dict redis-py's `get_message` would have returned for it."""
        return {"type": "message", "pattern": None, "channel": self.channel, "data": self.data}


def _gets(pubsub: Any) -> Callable[[], Any] | None:
    """The `gets` of the pub/sub connection's hiredis reader, if that is what it has."""
    if _NOT_ENOUGH_DATA is None:
        return None
    connection = getattr(pubsub, "connection", None)
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    gets = getattr(reader, "gets", None)
    return gets if callable(gets) else None


def plain_parser(pubsub: Any) -> Any | None:
    """The sync pub/sub connection's hiredis parser, if `receive` can wait on its socket
    itself: connected, subscribed, not TLS (an SSL socket may hold decrypted bytes that
    a poll of its descriptor does not see)."""
    if _PARSER is None or _NOT_ENOUGH_DATA is None or not pubsub.subscribed:
        return None
    parser = getattr(pubsub.connection, "_parser", None)
    if not isinstance(parser, _PARSER):
        return None
    sock, reader = getattr(parser, "_sock", None), getattr(parser, "_reader", None)
    if sock is None or reader is None or isinstance(sock, ssl.SSLSocket):
        return None
    return parser


def receive(pubsub: Any, timeout_s: float) -> dict[str, Any] | None:
    """The next pub/sub message of a sync PubSub, waiting up to `timeout_s`; None if none
    came (or only part of one).

    `get_message` on a quiet connection costs its caller ~45 us of CPU a message here
    (a scratch probe: 5,000 messages 0.5 ms apart), most of it its layers around a poll
    and a read; this polls the socket and reads it through the parser itself (~23 us),
    after redis-py's own health check. Where `plain_parser` finds nothing to work with,
    it is `get_message`."""
    parser = plain_parser(pubsub)
    if parser is None:
        message: dict[str, Any] | None = pubsub.get_message(timeout=timeout_s)
        return message
    pubsub.check_health()
    reply = parser._reader.gets()
    if reply is _NOT_ENOUGH_DATA:
        poller = select.poll()
        poller.register(parser._sock, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout_s * 1000))):
            return None
        parser.read_from_socket()  # raises ConnectionError if the server closed it
        reply = parser._reader.gets()
        if reply is _NOT_ENOUGH_DATA:
            return None
    return _message(pubsub, reply)


def _message(pubsub: Any, reply: Any) -> dict[str, Any] | None:
    taken = _classified(pubsub, reply)
    if taken is None:
        return None
    if isinstance(taken, Published):
        return taken.as_message()
    handled: dict[str, Any] | None = pubsub.handle_message(taken)
    return handled


def _classified(pubsub: Any, reply: Any) -> Published | Any:
    """A `Published` for a published message, None for a health check's pong (as
    redis-py's parse_response drops it), else the raw reply; raises
    redis.ConnectionError for an error reply."""
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
        channel, data = reply[1], reply[2]
        if isinstance(channel, bytes) and isinstance(data, bytes):
            return Published(channel, data)
    _raise_if_error(reply)
    if pubsub.connection.health_check_interval and reply in pubsub.health_check_response:
        return None
    return reply


def buffered(pubsub: Any, limit: int = MAX_BATCH) -> list[Published | Any]:
    """Up to `limit` complete replies the connection's parser holds, in order, taken
    without reading the socket: a `Published` for each published message, the raw reply
    for anything else (for `handle_message`). Empty when nothing is held, or when the
    parser is not one this can read. Raises redis.ConnectionError for an error reply."""
    gets = _gets(pubsub)
    if gets is None:
        return []
    replies: list[Published | Any] = []
    while len(replies) < limit:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            break
        taken = _classified(pubsub, reply)
        if taken is not None:
            replies.append(taken)
    return replies


def _raise_if_error(reply: Any) -> None:
    error = reply[0] if isinstance(reply, list) and reply else reply
    if isinstance(error, redis.ConnectionError):
        raise error
    if isinstance(error, Exception):  # redis-py's handle_message cannot take one either
        raise redis.ConnectionError(f"an error reply on the pub/sub connection: {error}")
