"""Helpers of the archive tests: the test schema, synthetic runs, a TCP proxy, waiting."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from shared.events import Envelope
from tests.redis_server import free_port

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
WAIT_S = 60.0


def wait_for(predicate: Callable[[], Any], *, timeout_s: float = WAIT_S, what: str = "") -> Any:
    """Re-check `predicate` until it holds (a safety-net timeout, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def count(schema: str, query: str, *params: Any) -> int:
    """One number from the test schema (a fresh connection: sees every commit)."""
    with psycopg.connect(PG_DSN) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
        row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0


def envelope(session_id: str, run_id: str, seq: int, ts: float, kind: str, **data: Any) -> Envelope:
    return Envelope(seq=seq, session_id=session_id, run_id=run_id, ts=ts, type=kind, data=data)


def synthetic_run(
    session_id: str,
    run_id: str,
    first_seq: int,
    *,
    finished_at: float,
    status: str = "succeeded",
    metadata: dict[str, Any] | None = None,
    model: str = "sonnet",
    profile: str = "readonly",
    cost_usd: float = 0.01,
) -> list[Envelope]:
    """A run's events as a worker would log them: queued, started, init, result, finished."""
    s, r, t = session_id, run_id, finished_at
    return [
        envelope(
            s,
            r,
            first_seq,
            t - 3,
            "queued",
            profile=profile,
            metadata=metadata or {},
            prompt="hello " * 60,
        ),
        envelope(s, r, first_seq + 1, t - 2, "started", worker="w0", host="h", pid=1),
        envelope(s, r, first_seq + 2, t - 2, "init", model=model),
        envelope(
            s,
            r,
            first_seq + 3,
            t - 1,
            "result",
            is_error=status != "succeeded",
            total_cost_usd=cost_usd,
            usage={"input_tokens": 10, "output_tokens": 5},
        ),
        envelope(s, r, first_seq + 4, t, "finished", status=status, duration_s=2.0),
    ]


@dataclass
class TcpProxy:
    """Forwards a loopback port to PostgreSQL; closed (refusing) until `open()`."""

    port: int
    target: tuple[str, int] = (PG_HOST, PG_PORT)
    listener: socket.socket | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    @classmethod
    def reserved(cls) -> TcpProxy:
        return cls(free_port())

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:hunter2secret@127.0.0.1:{self.port}/test"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [*self.sockets, *([self.listener] if self.listener else [])]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
