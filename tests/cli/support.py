"""Running `claude-queue` as a user does: through a pipe, or on a pseudo-terminal."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from shared.settings import Settings
from tests.conftest import worker_env
from tests.zygote import shared_zygote

# Generous safety nets: tests wait on output, never on the clock.
TIMEOUT_S = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;")


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "producer", *args]


def run(
    settings: Settings, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one command to its end with pipes (not a terminal)."""
    return shared_zygote().run(["producer", *args], env=worker_env(settings, env), input=stdin)


class Lines:
    """The lines of a stream, read by a thread, waited for by content."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], what: str) -> str:
        """The first new line that satisfies `wanted`; fails at EOF or after TIMEOUT_S."""
        while True:
            try:
                line = self._queue.get(timeout=TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no line with {what}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"ended without {what}; saw {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def rest(self) -> str:
        """Everything, once the stream has ended."""
        while (line := self._queue.get(timeout=TIMEOUT_S)) is not None:
            self.seen.append(line)
        return "".join(self.seen)

    def close(self) -> None:
        """Once the writer has gone: let the reader reach EOF, then close the stream."""
        self._thread.join(TIMEOUT_S)
        self.stream.close()


class Piped:
    """A running command with stdout and stderr on pipes, read line by line."""

    def __init__(self, settings: Settings, *args: str, env: dict[str, str] | None = None) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = shared_zygote().popen(
                ["producer", *args], env=worker_env(settings, env), stdout=out_w, stderr=err_w
            )
        finally:
            os.close(out_w)
            os.close(err_w)
        self.out = Lines(open(out_r, encoding="utf-8"))  # noqa: SIM115 (Lines closes it)
        self.err = Lines(open(err_r, encoding="utf-8"))  # noqa: SIM115

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT_S)
        self.out.close()
        self.err.close()


class Terminal:
    """A running command on a pseudo-terminal (stdin, stdout and stderr are its tty)."""

    def __init__(self, settings: Settings, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = worker_env(settings, {"TERM": "xterm-256color", "COLUMNS": "100", **(env or {})})
        self.proc, self.master = shared_zygote().on_terminal(["producer", *args], env=full_env)
        self.text = ""
        self._chunks: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the other side closed
                chunk = b""
            if not chunk:
                self._chunks.put(None)
                return
            self._chunks.put(chunk.decode(errors="replace"))

    def expect(self, pattern: str) -> re.Match[str]:
        """Wait until the screen output (escapes removed) matches `pattern`."""
        while True:
            found = re.search(pattern, ANSI.sub("", self.text))
            if found:
                return found
            try:
                chunk = self._chunks.get(timeout=TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} in {self.text!r}") from None
            if chunk is None:
                raise AssertionError(f"ended without {pattern!r}: {self.text!r}")
            self.text += chunk

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self) -> int:
        """Read to the end and return the exit code."""
        while (chunk := self._chunks.get(timeout=TIMEOUT_S)) is not None:
            self.text += chunk
        return self.proc.wait(timeout=TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT_S)
        os.close(self.master)
