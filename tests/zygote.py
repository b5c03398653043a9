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
process (see `Zygote.can_run`).

The zygote itself is tests/zygote_server.py. Protocol, one SOCK_SEQPACKET connection
per child: the request is one message, JSON `{"args", "env", "cwd", "new_session"}`
with the child's
fds 0, 1 and 2 attached. The zygote answers with the pid and a pidfd for it, then, once
the child has exited, with its return code as `Popen.returncode` gives it (negative:
killed by that signal).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.zygote_server import STATUS

REPO = Path(__file__).resolve().parent.parent


def _interpreter_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables an interpreter reads as it starts (PYTHONPATH, PYTHONUNBUFFERED, ...)."""
    return {name: value for name, value in env.items() if name.startswith("PYTHON")}


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
        if len(data) != STATUS.size:
            raise RuntimeError(f"the zygote went away before pid {self.pid} ended")
        (self.returncode,) = STATUS.unpack(data)

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
        self._started_with = _interpreter_settings(os.environ)
        self.log_path = folder / "zygote.log"
        with self.log_path.open("wb") as log:
            # stdin: the zygote exits when this pipe closes, so it never outlives us.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote_server", str(self.socket_path)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline() != b"ready\n":
            self._proc.wait()
            raise RuntimeError(f"the zygote did not start: {self.log_path.read_text()}")

    def can_run(self, env: Mapping[str, str]) -> bool:
        """True if a child with `env` would start as a fresh interpreter would: its PYTHON*
        variables are those the zygote itself started with."""
        return _interpreter_settings(env) == self._started_with

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdout: int,
        stderr: int,
        stdin: int | None = None,
        new_session: bool = False,
    ) -> ForkedProcess:
        """`python -m <args>` as a child of the zygote; stdin is /dev/null if not given."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(self.socket_path))
        request = json.dumps(
            {"args": list(args), "env": dict(env), "cwd": str(cwd), "new_session": new_session}
        )
        with open(os.devnull, "rb") as devnull:
            fds = [devnull.fileno() if stdin is None else stdin, stdout, stderr]
            socket.send_fds(conn, [request.encode()], fds)
        data, fds, _, _ = socket.recv_fds(conn, 64, 1)
        if len(data) != STATUS.size or len(fds) != 1:
            conn.close()
            raise RuntimeError(f"the zygote refused {list(args)}: {self.log_path.read_text()}")
        (pid,) = STATUS.unpack(data)
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

    def popen(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        stdout: int,
        stderr: int,
        stdin: int | None = None,
        cwd: Path = REPO,
        new_session: bool = False,
    ) -> subprocess.Popen[bytes]:
        """`python -m <args>` on these fds: forked if `can_run(env)`, else started fresh."""
        if self.can_run(env):
            return self.spawn(
                args,
                env=env,
                cwd=cwd,
                stdout=stdout,
                stderr=stderr,
                stdin=stdin,
                new_session=new_session,
            )
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
        )

    def on_terminal(
        self, args: Sequence[str], *, env: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes], int]:
        """`python -m <args>` in a new session on a fresh pseudo-terminal: the process
        and the terminal's master side (the caller closes it)."""
        master, slave = os.openpty()
        try:
            proc = self.popen(
                args, env=env, stdin=slave, stdout=slave, stderr=slave, new_session=True
            )
        finally:
            os.close(slave)
        return proc, master

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path = REPO,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """subprocess.run(python -m args, input=, capture_output=True, text=True), forked
        or started fresh as `popen` decides."""
        argv = [sys.executable, "-m", *args]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if input is not None else (None, None)
        try:
            proc = self.popen(args, env=env, cwd=cwd, stdout=out_w, stderr=err_w, stdin=in_r)
        finally:
            for fd in (out_w, err_w, in_r):
                if fd is not None:
                    os.close(fd)
        try:
            out, err = _communicate(in_w, (input or "").encode(), out_r, err_r, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(argv, timeout) from None
        return subprocess.CompletedProcess(argv, proc.wait(timeout), _text(out), _text(err))


def _text(data: bytes) -> str:
    """As text=True decodes: the locale's encoding (UTF-8 here), universal newlines."""
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


def _feed(in_w: int, data: bytes) -> None:
    # The suppress outside the file: a child that exited unread makes the buffered
    # write fail at close (as subprocess.run ignores it), not only at write.
    with contextlib.suppress(BrokenPipeError), open(in_w, "wb") as pipe:
        pipe.write(data)


def _communicate(
    in_w: int | None, data: bytes, out_r: int, err_r: int, timeout: float
) -> tuple[bytes, bytes]:
    """Feed data to in_w (a thread; it closes it), read out_r and err_r to EOF; closes them."""
    if in_w is not None:
        threading.Thread(target=_feed, args=(in_w, data), daemon=True).start()
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    selector = selectors.DefaultSelector()
    try:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            ready = selector.select(deadline - time.monotonic())
            if not ready:
                raise subprocess.TimeoutExpired([], timeout)
            for key, _ in ready:
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    chunks[key.fd].append(chunk)
                else:
                    selector.unregister(key.fd)
    finally:
        selector.close()
        os.close(out_r)
        os.close(err_r)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


_SHARED: list[Zygote] = []


def shared_zygote() -> Zygote:
    """This test process's zygote: started on first use, stopped (and its folder removed)
    when the process exits."""
    if not _SHARED:
        folder = Path(tempfile.mkdtemp(prefix="cq-zygote-"))
        _SHARED.append(Zygote(folder))
        atexit.register(shutil.rmtree, folder, True)
        atexit.register(_SHARED[0].close)
    return _SHARED[0]
