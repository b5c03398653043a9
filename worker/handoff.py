"""The two pipes between a worker and its spare work horse (worker/spare.py).

The handoff pipe carries one line a job: which job, from which queue, as which RQ
execution. The done pipe carries one byte after each job the horse will follow with
another; the horse holds its only write end, so its exit closes it.
"""

from __future__ import annotations

import os
import select

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_MAX_LINE = 4096
# RQ's names: printable ASCII without spaces, which keeps the handoff one short line.
_NAME = Field(min_length=1, max_length=512, pattern=r"^[!-~]+$")


class Handoff(BaseModel):
    """The one line a spare reads: which job to run, from which queue, as which execution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = _NAME
    queue: str = _NAME
    execution_id: str = _NAME

    def line(self) -> bytes:
        return self.model_dump_json().encode() + b"\n"


def read_handoff(fd: int) -> Handoff | None:
    """The first line from fd (at most _MAX_LINE bytes), validated; None on EOF or junk."""
    buffered = b""
    while b"\n" not in buffered and len(buffered) < _MAX_LINE:
        try:
            chunk = os.read(fd, _MAX_LINE - len(buffered))
        except InterruptedError:  # pragma: no cover - PEP 475 retries reads already
            continue
        if not chunk:
            return None
        buffered += chunk
    line, newline, _rest = buffered.partition(b"\n")
    if not newline:
        return None
    try:
        return Handoff.model_validate_json(line)
    except ValidationError:
        return None


def await_done(done_fd: int) -> bool:
    """Block until the horse writes its done byte (True) or closes the pipe (False).

    poll() consumes nothing, so an alarm that interrupts this (RQ's monitor) loses
    nothing either."""
    poller = select.poll()
    poller.register(done_fd, select.POLLIN)
    while True:
        for _fd, mask in poller.poll():
            if mask & select.POLLIN:  # a byte, whether or not it has exited since
                return True
            if mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return False
