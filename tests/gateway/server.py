"""A real gateway process for the tests: `claude-queue serve` on a loopback port.

Its log lines are read by a thread as they come, so a test can wait for one (an
event, not a sleep): the start line, or the line of a dropped client.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.settings import Settings
from tests.conftest import REPO, worker_env
from tests.redis_server import free_port

API_KEY = "test-api-key-0123456789"
TOKEN_SECRET = "test-token-secret-0123456789abcdef"
STARTED = "Uvicorn running on"  # printed once the socket listens (after the app started)
START_TIMEOUT_S = 60.0
PORT_TAKEN = "address already in use"  # uvicorn's words when its bind fails
BIND_ATTEMPTS = 5


def serve_argv(*args: str) -> list[str]:
    """`claude-queue serve ARGS`: through the CLI group once it registers the command."""
    from producer.cli import main

    if "serve" in main.commands:
        return [sys.executable, "-m", "producer", "serve", *args]
    return [
        sys.executable,
        "-c",
        "from producer.cli_serve import serve; serve(prog_name='claude-queue serve')",
        *args,
    ]


def gateway_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `serve` build these settings (secrets included)."""
    env = worker_env(settings)
    for name in ("API_KEYS", "TOKEN_SECRET", "WEBHOOK_SECRET"):
        env.pop(f"CLAUDE_QUEUE_{name}", None)  # dumped masked: set for real below
    if settings.api_keys:
        keys = [key.get_secret_value() for key in settings.api_keys]
        env["CLAUDE_QUEUE_API_KEYS"] = json.dumps(keys)
    if settings.token_secret is not None:
        env["CLAUDE_QUEUE_TOKEN_SECRET"] = settings.token_secret.get_secret_value()
    return env


@dataclass
class Server:
    """One server process and the log lines it printed so far."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    pumping: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    killed: bool = False  # SIGTERM did not end it: stop() had to SIGKILL it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pump(self) -> None:
        """Thread body: collect lines until the process closes its output."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """The first line containing `text`, once printed; AssertionError if it never is."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._closed, timeout_s)
            line = found()
        if line is None:
            raise AssertionError(f"the gateway never printed {text!r}:\n" + self.log())
        return line

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the port accepts connections. With --workers, uvicorn's parent binds the
        socket and prints its start line, but only a worker process listens on it, and no
        line says when; so here (only) the port itself is asked, until it answers."""
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"nothing listens on {self.port}:\n{self.log()}") from None
                pause.wait(0.05)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        if self.pumping is not None:
            self.pumping.join(timeout=20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(
    settings: Settings,
    args: Sequence[str] = (),
    *,
    argv: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """Start a gateway on a free loopback port and wait for its start line.

    free_port() only finds a port free for a moment: another test's server can take
    it before the gateway binds. The gateway then exits saying so, and is started
    again on another port."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = free_port()
        command = list(argv) if argv is not None else serve_argv("--port", str(port), *args)
        proc = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            cwd=REPO,
            env={**gateway_env(settings), **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        server = Server(proc, port)
        server.pumping = threading.Thread(target=server.pump, daemon=True)
        server.pumping.start()
        try:
            server.wait_for(STARTED)
            server.wait_listening()
        except AssertionError:
            server.stop()
            if attempt < BIND_ATTEMPTS and PORT_TAKEN in server.log():
                continue
            raise
        return server
    raise AssertionError("unreachable: the last attempt returned or raised")
