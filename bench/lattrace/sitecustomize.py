"""Loaded by every Python process started with this folder on PYTHONPATH (bench/
latency_trace.py puts it there for its worker only). With CQBENCH_LATTRACE_DIR set, a work
horse records, for each read of the CLI's stdout that ends in a stamped line, when
the read returned, when parsing began and ended, when the flush began, when its script
call began and ended and when the flush returned: one line of monotonic ns a read, in
`<dir>/<pid>.txt`. Nothing here runs in any other process."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any

_DIR = os.environ.get("CQBENCH_LATTRACE_DIR")


def _install(directory: str) -> None:
    sys.path.insert(0, os.environ.get("CQBENCH_REPO", os.getcwd()))
    from shared.runstore import line
    from worker import process, publisher, pump

    stamp = re.compile(rb"t=(\d+);")
    state: dict[str, Any] = {"stamp": 0}

    def record(*values: int) -> None:
        fd = os.open(f"{directory}/{os.getpid()}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (" ".join(map(str, values)) + "\n").encode())
        finally:
            os.close(fd)

    read = process.CliProcess.read

    def traced_read(self: process.CliProcess, timeout_s: float) -> process.ReadResult:
        chunk = read(self, timeout_s)
        now = time.monotonic_ns()
        last = chunk.lines[-1] if chunk.lines else None
        found = stamp.search(last) if isinstance(last, bytes) else None
        state.update(stamp=int(found.group(1)) if found else 0, read=now, lines=len(chunk.lines))
        return chunk

    take = pump._take_lines

    def traced_take(*args: Any, **kwargs: Any) -> bool:
        start = time.monotonic_ns()
        result = take(*args, **kwargs)
        state["take"] = (start, time.monotonic_ns())
        return result

    call = line.WriteLine._call

    def traced_call(conn: Any, commands: Any) -> Any:
        start = time.monotonic_ns()
        result = call(conn, commands)
        state["call"] = (start, time.monotonic_ns())
        return result

    flush = publisher.Publisher.flush

    def traced_flush(self: publisher.Publisher, **kwargs: Any) -> None:
        start = time.monotonic_ns()
        state["call"] = (0, 0)
        flush(self, **kwargs)
        if state["stamp"]:
            end = time.monotonic_ns()
            values = (state["stamp"], state["read"], *state["take"], start, *state["call"])
            record(*values, end, state["lines"])
            state["stamp"] = 0

    process.CliProcess.read = traced_read  # type: ignore[method-assign]
    pump._take_lines = traced_take
    line.WriteLine._call = staticmethod(traced_call)  # type: ignore[method-assign]
    publisher.Publisher.flush = traced_flush  # type: ignore[method-assign]


if _DIR:
    _install(_DIR)
