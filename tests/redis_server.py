"""A Redis server owned by a test (own port, own dir, AOF on), for outage and restart tests."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PORT_TAKEN = "Address already in use"  # in Redis's log when its bind fails
BIND_ATTEMPTS = 5


def free_port() -> int:
    """A loopback port nothing holds now, below the kernel's ephemeral range.

    The kernel hands ports in that range to outgoing connections, and the tests open
    hundreds (Redis clients): a port it chose for us there could go to one of them
    before our server binds it. Below the range only another test can take it, by
    drawing the same one of some 20,000 ports at the same moment. SystemRandom: the
    `random` module's shared state is hypothesis's (see probe_client)."""
    low = _ephemeral_low()
    draw = random.SystemRandom()
    for _ in range(100):
        port = draw.randrange(max(1024, low - 20_000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as probe:  # all drawn were held: the kernel's choice, then
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (32768 by default)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return max(2048, int(text.split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = self.find_binary()
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # once: later starts keep the port

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
        """Start it; the first start moves to another port if this one was taken.

        free_port() only finds a port free for a moment: another test's server, or an
        outgoing connection given that port by the kernel, can take it before Redis
        binds. A later start (after stop) keeps the port: the test's clients use it."""
        attempts = 1 if self.started else BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except RuntimeError:
                if attempt < attempts and PORT_TAKEN in self._log():
                    self.proc = None
                    self.port = free_port()
                    continue
                raise
            self.started = True
            return

    def _log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _start_once(self) -> None:
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
        self._await(self._answers_as_ours, "start")

    def _answers_as_ours(self) -> bool:
        """Our process answers on the port: not another test's server that took the port
        first (ours then exits, unable to bind, while the other answers PING)."""
        assert self.proc is not None
        client = probe_client(self.port, connect_timeout_s=0.2, timeout_s=1.0)
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return isinstance(info, dict) and info.get("process_id") == self.proc.pid

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
            exited = self.proc is not None and self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
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
