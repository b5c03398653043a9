"""A connection kept for the event-writing script: the hot path's way past redis-py's
per-command machinery.

Every batch of events is one EVALSHA. Through redis-py's client one such call takes
a connection from the pool and gives it back, packs each argument in Python, goes
through the observability hooks and the response callbacks: ~110 us a call on this
machine, where the same EVALSHA packed by hiredis on a connection kept for it takes
~44 us (bench/README.md, "A write line for the hot path").

The line keeps one connection of the client's own pool, so its credentials, db, TLS
and Sentinel master discovery are the client's. Before each call it runs the pool's own
check of a connection it hands out (a connection Redis closed is replaced), then sends
with the connection's retry policy, and redis-py's connection drops itself on any error
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
from redis.exceptions import NoScriptError

Arg = str | int | float


class WriteLine:
    """Script calls over one connection held for them (thread-safe; fork-aware)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: Connection | None = None

    def evalsha(self, sha: str, source: str, keys: list[str], args: list[Arg]) -> Any:
        """EVALSHA; if Redis does not have the script (restarted, flushed), EVAL it,
        which also caches it for the next call."""
        if os.getpid() != self._pid:  # a forked child: the connection is the parent's
            self._pid, self._lock, self._conn = os.getpid(), threading.Lock(), None
        with self._lock:
            conn = self._connection()
            try:
                return self._call(conn, ("EVALSHA", sha, len(keys), *keys, *args))
            except NoScriptError:
                return self._call(conn, ("EVAL", source, len(keys), *keys, *args))

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
    def _call(conn: Connection, command: tuple[Arg, ...]) -> Any:
        packed = pack_command(command)  # type: ignore[arg-type]  # its stub: a 1-tuple

        def attempt() -> Any:
            conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
            return conn.read_response()

        def failed(_error: Exception) -> None:
            conn.disconnect()  # type: ignore[no-untyped-call]  # the next attempt reconnects

        return conn.retry.call_with_retry(attempt, failed)
