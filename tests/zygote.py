"""A fork server for the tests' `python -m producer ...` processes.

Most of the suite's CPU went to starting Python: each `claude-queue worker` a test
started spent about 0.3 s importing redis-py, RQ, pydantic, structlog and the project,
before doing anything, and the suite starts hundreds. The zygote imports all of that
once per test process, then forks a child per request. The child sets its own fds,
folder, environment and argv, and runs `producer` as `__main__` exactly as
`python -m producer` would: the settings are built from the environment in `main()`, as
in every process (the project reads no environment at import time).

What the child cannot have is what the interpreter reads before any code runs: `PYTHON*`
variables and the command line shown in /proc. A caller that needs those starts a real
process (see `spawn_allowed`).

Protocol (one SOCK_SEQPACKET connection per child): the request is one message, JSON
`{"args", "env", "cwd"}` with the child's fds 0, 1 and 2 attached; the zygote answers
with the pid and a pidfd for it, then, when the child has exited, with its return code
in the form `Popen.returncode` uses (negative: killed by that signal).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import runpy
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_STATUS = struct.Struct("!i")
_MAX_REQUEST = 1 << 20
# What a `claude-queue worker` and its work horses import, loaded once here.
_PRELOAD = (
    "producer.entry",
    "producer.cli",
    "producer.doctor",
    "worker.rqworker",
    "worker.pool",
    "worker.metrics",
    "worker.job",
)


def spawn_allowed(env: Mapping[str, str]) -> bool:
    """False where the interpreter itself must see the environment (PYTHONPATH, ...)."""
    return not any(name.startswith("PYTHON") for name in env)


# ---- the test side -------------------------------------------------------------------


class ForkedProcess(subprocess.Popen[bytes]):
    """A Popen for a child of the zygote: poll, wait, signals, returncode.

    Signals go through a pidfd, so they can never reach a process that reused the pid.
    Popen.__init__ is not called (it would start a process); the attributes its other
    methods read are set here.
    """

    def __init__(self, args: Sequence[str], conn: socket.socket, pid: int, pidfd: int):
        self.args = list(args)
        self.pid = pid
        self.returncode: int | Any = None
        self.stdin = self.stdout = self.stderr = None
        self._child_created = False
        self._conn = conn
        self._pidfd = pidfd

    def _read_status(self) -> None:
        data = self._conn.recv(64)
        self._conn.close()
        os.close(self._pidfd)
        if len(data) != _STATUS.size:
            raise RuntimeError(f"the zygote went away before pid {self.pid} ended")
        (self.returncode,) = _STATUS.unpack(data)

    def poll(self) -> int | Any:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._read_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | Any:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._read_status()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def __del__(self) -> None:
        if self.returncode is None:
            self._conn.close()
            with contextlib.suppress(OSError):
                os.close(self._pidfd)


class Zygote:
    """One zygote process, owned by one test process (see conftest's `start_worker`)."""

    def __init__(self, folder: Path) -> None:
        self.socket_path = folder / "zygote.sock"
        self.log_path = folder / "zygote.log"
        with self.log_path.open("wb") as log:
            # stdin: the zygote exits when this pipe closes, so it never outlives us.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote", str(self.socket_path)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline() != b"ready\n":
            self._proc.wait()
            raise RuntimeError(f"the zygote did not start: {self.log_path.read_text()}")

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdout: int,
        stderr: int,
    ) -> ForkedProcess:
        """`python -m <args>` as a child of the zygote; stdin is /dev/null."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(self.socket_path))
        request = json.dumps({"args": list(args), "env": dict(env), "cwd": str(cwd)})
        with open(os.devnull, "rb") as devnull:
            socket.send_fds(conn, [request.encode()], [devnull.fileno(), stdout, stderr])
        data, fds, _, _ = socket.recv_fds(conn, 64, 1)
        if len(data) != _STATUS.size or len(fds) != 1:
            conn.close()
            raise RuntimeError(f"the zygote refused {list(args)}: {self.log_path.read_text()}")
        (pid,) = _STATUS.unpack(data)
        return ForkedProcess([sys.executable, "-m", *args], conn, pid, fds[0])

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# ---- the zygote ----------------------------------------------------------------------


def _exit_code(code: object) -> int:
    """What the interpreter would exit with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


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
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR is read again
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
            socket.send_fds(conn, [_STATUS.pack(pid)], [pidfd])
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", conn, pid, pidfd))

    def _reap(self, conn: socket.socket, pid: int, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        self.pidfds.discard(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            conn.send(_STATUS.pack(os.waitstatus_to_exitcode(status)))
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
