"""The zygote: a fork server for `python -m <module>` (its client: tests/zygote.py).

Run as `python -m tests.zygote_server SOCKET`; it prints `ready` once it listens, and
exits when its stdin closes.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import traceback
from typing import Any

STATUS = struct.Struct("!i")  # a pid, then a return code
_MAX_REQUEST = 1 << 20
# What a `claude-queue worker` and its work horses import, loaded once here.
_PRELOAD = (
    "producer.entry",
    "producer.cli",
    "producer.doctor",
    "worker.rqworker",
    "worker.entry",
    "worker.pool",
    "worker.metrics",
    "worker.job",
)


def _exit_code(code: object) -> int:
    """What the interpreter would exit with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _fresh_stdio() -> None:
    """sys.stdin/stdout/stderr as the interpreter would build them on the child's fds:
    line-buffered on a terminal (stderr always), unbuffered under PYTHONUNBUFFERED."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding = sys.stdout.encoding
    for fd, name, errors in (
        (0, "stdin", "strict"),
        (1, "stdout", "strict"),
        (2, "stderr", "backslashreplace"),
    ):
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        buffer: io.RawIOBase | io.BufferedIOBase
        if fd == 0:
            buffer = io.BufferedReader(raw)
        elif unbuffered:
            buffer = raw
        else:
            buffer = io.BufferedWriter(raw)
        stream = io.TextIOWrapper(
            buffer,
            encoding=encoding,
            errors=errors,
            newline="\n",
            line_buffering=not unbuffered and (fd == 2 or os.isatty(fd)),
            write_through=unbuffered,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run_child(request: dict[str, Any], fds: list[int], owned: list[Any], pidfds: set[int]) -> None:
    """In the forked child: become `python -m <args>`; never returns."""
    code = 1
    interrupted = False
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for thing in owned:
            thing.close()
        for pidfd in pidfds:
            os.close(pidfd)
        if request.get("new_session"):
            os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR is read again
        _fresh_stdio()
        module, *rest = request["args"]
        sys.argv = ["-m", *rest]
        code = 0
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What interpreter shutdown does: wait for non-daemon threads, then atexit.
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        if interrupted:  # as the interpreter does: die of the SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


class _Server:
    """The zygote's loop: requests in, children forked, their ends reported."""

    def __init__(self, socket_path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(socket_path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept",))
        # Our test process closes this pipe when it is done (or gone).
        self.selector.register(sys.stdin, selectors.EVENT_READ, ("parent",))
        self.conns: set[socket.socket] = set()
        self.pidfds: set[int] = set()

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                kind = key.data[0]
                if kind == "parent":
                    return
                if kind == "accept":
                    conn, _ = self.listener.accept()
                    self.conns.add(conn)
                    self.selector.register(conn, selectors.EVENT_READ, ("request", conn))
                elif kind == "request":
                    self._fork(key.data[1])
                else:
                    self._reap(*key.data[1:])

    def _fork(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        data, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
        if not data or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self._drop(conn)
            return
        request = json.loads(data)
        assert threading.active_count() == 1, "the zygote must not fork with threads"
        pid = os.fork()
        if pid == 0:
            _run_child(request, fds, [self.selector, self.listener, *self.conns], self.pidfds)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)  # before any wait: it names this very child
        self.pidfds.add(pidfd)
        with contextlib.suppress(OSError):
            socket.send_fds(conn, [STATUS.pack(pid)], [pidfd])
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", conn, pid, pidfd))

    def _reap(self, conn: socket.socket, pid: int, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        self.pidfds.discard(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            conn.send(STATUS.pack(os.waitstatus_to_exitcode(status)))
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self.conns.discard(conn)
        conn.close()


def _serve(socket_path: str) -> None:
    gc.disable()
    for name in _PRELOAD:
        __import__(name)
    gc.freeze()
    gc.enable()
    server = _Server(socket_path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    server.serve()


if __name__ == "__main__":
    _serve(sys.argv[1])
