"""A Redis server owned by a test (own port, own dir, AOF on), for outage and restart tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = self.find_binary()
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find_binary() -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        return binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
        )
        self._await(self.ping, "start")

    def ping(self) -> bool:
        client = probe_client(self.port, connect_timeout_s=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (the AOF keeps every write)."""
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _await(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not {what}; see {self.dir / 'redis.log'}")
            time.sleep(0.02)


def probe_client(
    port: int, *, connect_timeout_s: float, timeout_s: float | None = None
) -> redis.Redis:
    """A client for polling a test server: one try per call, no retry of its own.

    redis.Redis(...) built by hand retries a refused connection 10 times, with a jitter
    drawn from the `random` module's shared state: a poll left running in a background
    thread after its test failed made the next test's hypothesis run on that process
    fail (it saw the shared state change while it drew an example)."""
    return redis.Redis(
        port=port,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
