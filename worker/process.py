"""Spawn the CLI, talk to it on stdin, read its output as bounded lines, kill its tree.

No shell is ever involved; the prompt goes to stdin, never argv. Stdin stays open
after the prompt (answers and interrupts follow) until `close_stdin`. Reads and
writes are non-blocking through one selector that also watches the process (pidfd)
and a wake-up pipe, so a cancel from another thread interrupts a wait at once.
Only the thread that reads may write; other threads only `wake` it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from worker.command import CliCommand
from worker.priority import lower_priority
from worker.proctree import die_with_parent, kill_run_tree, start_ticks

_READ_CHUNK = 1 << 20
# After the tree is killed every pipe writer is dead; this only guards a kernel hiccup.
_DRAIN_LIMIT_S = 5.0


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line over the size limit; its bytes were dropped, only its size is kept."""

    size: int


Line = bytes | LineTooLong


class LineFramer:
    """Split a byte stream into lines, never holding more than `max_line_bytes`."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self._dropping = False
        self._dropped = 0

    def feed(self, chunk: bytes) -> list[Line]:
        out: list[Line] = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:newline]
            start = newline + 1
            if self._dropping:
                out.append(LineTooLong(self._dropped + len(piece)))
                self._dropping, self._dropped = False, 0
            elif self._buf:
                self._buf += piece
                out.append(self._take())
            elif len(piece) > self._max:
                out.append(LineTooLong(len(piece)))
            else:
                out.append(piece)
        self._keep(chunk[start:])
        return out

    def close(self) -> list[Line]:
        """The last line, if the stream ended without a newline."""
        if self._dropping:
            self._dropping = False
            return [LineTooLong(self._dropped)]
        return [self._take()] if self._buf else []

    def _take(self) -> Line:
        line = bytes(self._buf)
        self._buf.clear()
        return line if len(line) <= self._max else LineTooLong(len(line))

    def _keep(self, rest: bytes) -> None:
        if self._dropping:
            self._dropped += len(rest)
            return
        self._buf += rest
        if len(self._buf) > self._max:
            self._dropping, self._dropped = True, len(self._buf)
            self._buf = bytearray()


class TailBuffer:
    """Keeps the last `limit` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > 2 * self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return bytes(self._data[-self._limit :]).decode("utf-8", errors="replace")


@dataclass(slots=True)
class ReadResult:
    lines: list[Line] = field(default_factory=list)
    eof: bool = False


def _require_executable(name: str, env: Mapping[str, str], cwd: str | None) -> None:
    """Raise what Popen raises for a program it cannot start: `name` looked up on the
    PATH of `env`, or, with a slash, taken relative to `cwd`."""
    if os.sep in name:
        path: str | None = os.path.join(cwd or os.getcwd(), name)  # an absolute name stays
    else:
        search = os.pathsep.join(os.get_exec_path(dict(env)))
        path = shutil.which(name, mode=os.F_OK, path=search)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)


class CliProcess:
    """One CLI process and everything it starts."""

    def __init__(
        self,
        command: CliCommand,
        *,
        run_id: str,
        max_line_bytes: int,
        stderr_tail_bytes: int,
        exec_prefix: Sequence[str] = (),
        nice: int = 0,
    ) -> None:
        self._command = command
        self._exec_prefix = tuple(exec_prefix)
        self._nice = nice
        self._run_id = run_id
        self._framer = LineFramer(max_line_bytes)
        self._stderr = TailBuffer(stderr_tail_bytes)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending_stdin = memoryview(command.stdin)
        self._stdin_open = False
        self._stdin_watched = False
        self._stdin_closing = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._exited = False
        self._stdout_open = False
        self._stderr_open = False
        self._kill_lock = threading.Lock()
        self._tree_gone = False
        self._closed = False
        self.pid = 0
        self.start_ticks: int | None = None

    def spawn(self) -> None:
        """Start the CLI. Raises OSError (e.g. FileNotFoundError) if it cannot start.

        It gets SIGKILL when the spawning thread dies: set by the exec prefix (see
        proctree.death_signal_prefix), else by a preexec_fn."""
        argv, command = self._command.argv, self._command
        if self._exec_prefix:
            # The prefix would report a missing CLI as its own exit 127: raise as Popen would.
            _require_executable(argv[0], command.env, command.cwd)
            argv = [*self._exec_prefix, *argv]
        self._popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=command.cwd,
            env=command.env,
            start_new_session=True,
            preexec_fn=None if self._exec_prefix else die_with_parent,  # noqa: PLW1509 - prctl only
            close_fds=True,
        )
        self.pid = self._popen.pid
        lower_priority(self.pid, self._nice)  # at once: what the CLI starts inherits it
        self.start_ticks = start_ticks(self.pid)
        assert self._popen.stdin and self._popen.stdout and self._popen.stderr
        for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            os.set_blocking(stream.fileno(), False)
        self._selector.register(self._popen.stdout, selectors.EVENT_READ, "stdout")
        self._selector.register(self._popen.stderr, selectors.EVENT_READ, "stderr")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stdout_open = self._stderr_open = self._stdin_open = True
        self._write_stdin()
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self.pid)
            self._selector.register(self._pidfd, selectors.EVENT_READ, "exit")

    @property
    def exited(self) -> bool:
        return self._exited

    def read(self, timeout_s: float) -> ReadResult:
        """Wait up to `timeout_s` for output; return complete lines, and eof at the end."""
        result = ReadResult()
        for key, _ in self._selector.select(max(timeout_s, 0.0)):
            what = key.data
            if what == "stdout":
                self._read_stdout(result)
            elif what == "stderr":
                self._read_stderr()
            elif what == "stdin":
                self._write_stdin()
            elif what == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif what == "exit":
                self._on_exit(result)
        if not self._exited and self._pidfd is None and self.poll() is not None:
            self._on_exit(result)
        result.eof = not self._stdout_open
        return result

    def _read_stdout(self, result: ReadResult) -> None:
        assert self._popen and self._popen.stdout
        try:
            chunk = os.read(self._popen.stdout.fileno(), _READ_CHUNK)
        except BlockingIOError:
            return
        if chunk:
            result.lines.extend(self._framer.feed(chunk))
            return
        result.lines.extend(self._framer.close())
        self._selector.unregister(self._popen.stdout)
        self._stdout_open = False

    def _read_stderr(self) -> bool:
        """Read what stderr has; False once it is closed."""
        assert self._popen and self._popen.stderr
        try:
            chunk = os.read(self._popen.stderr.fileno(), 65536)
        except BlockingIOError:
            return True
        if chunk:
            self._stderr.write(chunk)
            return True
        self._selector.unregister(self._popen.stderr)
        self._stderr_open = False
        return False

    @property
    def stdin_open(self) -> bool:
        """Can the CLI still be told something (stdin neither closed nor closing)?"""
        return self._stdin_open and not self._stdin_closing

    def send(self, data: bytes) -> bool:
        """Queue `data` for the CLI's stdin and write what it takes now; False if closed."""
        if not self.stdin_open:
            return False
        self._pending_stdin = memoryview(bytes(self._pending_stdin) + data)
        self._write_stdin()
        return True

    def close_stdin(self) -> None:
        """Close stdin once what is queued is written: the CLI ends after its turn."""
        if self._stdin_open:
            self._stdin_closing = True
            self._write_stdin()

    def _write_stdin(self) -> None:
        assert self._popen and self._popen.stdin
        while self._pending_stdin:
            try:
                written = os.write(self._popen.stdin.fileno(), self._pending_stdin[:65536])
                self._pending_stdin = self._pending_stdin[written:]
            except BlockingIOError:
                break
            except OSError as exc:  # the CLI closed stdin early: nothing more to say to it
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self._pending_stdin = memoryview(b"")
                self._stdin_closing = True
        self._watch_stdin(bool(self._pending_stdin))
        if not self._pending_stdin and self._stdin_closing and self._stdin_open:
            self._stdin_open = False
            self._popen.stdin.close()

    def _watch_stdin(self, watch: bool) -> None:
        assert self._popen and self._popen.stdin
        if watch and not self._stdin_watched:
            self._selector.register(self._popen.stdin, selectors.EVENT_WRITE, "stdin")
        elif not watch and self._stdin_watched:
            self._selector.unregister(self._popen.stdin)
        self._stdin_watched = watch

    def _on_exit(self, result: ReadResult) -> None:
        """The CLI is gone: take what it wrote, then end its tree so stdout reaches EOF."""
        self._exited = True
        self._pending_stdin, self._stdin_closing = memoryview(b""), True
        self._write_stdin()  # nobody reads it any more: close it
        if self._pidfd is not None:
            self._selector.unregister(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.kill_tree()
        self._drain_to_eof(result)

    def _drain_to_eof(self, result: ReadResult) -> None:
        """Read stdout and stderr to EOF now that every writer is dead (bounded wait)."""
        assert self._popen and self._popen.stdout and self._popen.stderr
        streams = {
            name
            for name, is_open in (("stdout", self._stdout_open), ("stderr", self._stderr_open))
            if is_open
        }
        deadline = time.monotonic() + _DRAIN_LIMIT_S
        while streams and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(remaining):
                if key.data == "stdout":
                    self._read_stdout(result)
                    if not self._stdout_open:
                        streams.discard("stdout")
                elif key.data == "stderr" and not self._read_stderr():
                    streams.discard("stderr")
            if not self._stdout_open:
                streams.discard("stdout")
        self._stdout_open = False

    def poll(self) -> int | None:
        assert self._popen
        return self._popen.poll()

    def wake(self) -> None:
        """Interrupt a `read` waiting in another thread."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def kill_tree(self) -> int:
        """SIGKILL the CLI and every descendant; safe from any thread, idempotent."""
        with self._kill_lock:
            if self._tree_gone:
                return 0
            killed = kill_run_tree(self._run_id, self.pid or None)
            # Once the CLI has exited and a sweep found its tree empty, no process of
            # the run is left to start another: later calls need no /proc scan.
            self._tree_gone = self._exited or (self.pid != 0 and self.poll() is not None)
            return killed

    def wait(self) -> int:
        """Reap the CLI and return its exit code (negative: killed by that signal)."""
        assert self._popen
        return self._popen.wait()

    def stderr_tail(self) -> str:
        return self._stderr.text()

    def close(self) -> None:
        """Release fds; the caller has already killed and reaped the process. Only the
        first call does: a second would close fd numbers the process may have reused."""
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._pidfd is not None:
            os.close(self._pidfd)
        if self._popen:
            for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
