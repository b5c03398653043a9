"""A connection kept for the event-writing script: the hot path's way past redis-py's
per-command machinery.

Every batch of events is one EVALSHA. Through redis-py's client one such call takes
a connection from the pool and gives it back, packs each argument in Python, goes
through the observability hooks and the response callbacks: ~110 us a call on this
machine, where the line takes ~51 us for the same call (bench/README.md, "A held write
line for event appends"). A write that replicas must confirm sends its WAIT right
behind it, on the same connection.

The line keeps one connection of the client's own pool, so its credentials, db, TLS
and Sentinel master discovery are the client's. Before each call it runs the pool's
own check of a connection it hands out (a connection Redis closed is replaced), then
sends the hiredis-packed commands with the connection's retry policy. Every reply is
read, error replies too, and redis-py's connection drops itself on any error
mid-reply, so a reply is never read by the wrong call. After a fork the inherited
connection is left to the parent and a new one taken.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from hiredis import pack_command  # redis[hiredis]: the same bytes as redis-py's packer
from redis.connection import Connection
from redis.exceptions import NoScriptError, ResponseError

Arg = str | bytes | int | float
Command = tuple[Arg, ...]


class WriteLine:
    """Script calls over one connection held for them (thread-safe; fork-aware)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: Connection | None = None

    def evalsha(
        self, sha: str, source: str, keys: list[str], args: list[Arg], *, then: Command = ()
    ) -> Any:
        """EVALSHA; if Redis does not have the script (restarted, flushed), EVAL it,
        which also caches it for the next call. With `then` (e.g. WAIT), that command
        follows on the same connection in the same round trip: returns both replies."""
        if os.getpid() != self._pid:  # a forked child: the connection is the parent's
            self._pid, self._lock, self._conn = os.getpid(), threading.Lock(), None
        after = [then] if then else []
        with self._lock:
            conn = self._connection()
            try:
                replies = self._call(conn, [("EVALSHA", sha, len(keys), *keys, *args), *after])
            except NoScriptError:
                replies = self._call(conn, [("EVAL", source, len(keys), *keys, *args), *after])
        return tuple(replies) if then else replies[0]

    def close(self) -> None:
        """Give the connection back to the pool (the next call takes one again)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and os.getpid() == self._pid:
                self._pool.release(conn)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._pool.get_connection()
        else:  # the pool's own check of a connection it hands out: reconnects a closed one
            self._pool.ensure_connection(self._conn)
        return self._conn

    @staticmethod
    def _call(conn: Connection, commands: list[Command]) -> list[Any]:
        """Send the commands together and read every reply; the first error reply is
        raised once all are read, so the connection stays in step."""
        packed = [pack_command(c) for c in commands]  # type: ignore[arg-type]  # stub: 1-tuple

        def attempt() -> list[Any]:
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in packed:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # read in full: the next reply is intact
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies

        def failed(_error: Exception) -> None:
            conn.disconnect()  # type: ignore[no-untyped-call]  # the next attempt reconnects

        return conn.retry.call_with_retry(attempt, failed)
