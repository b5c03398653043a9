"""Small helpers shared by the test tiers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from producer.client import RunHandle
from shared.events import Envelope, EventType
from worker.proctree import is_alive, read_stat
from worker.spare import SPARE_NAME


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll a condition that nothing we could await signals (another thread's state,
    RQ's bookkeeping after a run's last event); fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def envelope_texts(envelope: Envelope) -> list[str]:
    """The text blocks of a `message` event (none for other events)."""
    if envelope.type is not EventType.MESSAGE:
        return []
    return [str(b.get("text")) for b in envelope.data.get("content", []) if b.get("type") == "text"]


def texts(events: Iterable[Envelope]) -> list[str]:
    """Every message text block of these events, in order."""
    return [text for envelope in events for text in envelope_texts(envelope)]


def until_grandchild(handle: RunHandle) -> tuple[int, int]:
    """Follow a `FAKE: grandchild` run until it has spawned and gone quiet: (CLI pid,
    grandchild pid). The answer naming the grandchild is followed by its tool result,
    the run's last event before its pause, so a caller reading the log afterwards sees
    it settled (returning at the answer raced that one more event)."""
    cli_pid = grandchild = 0
    for envelope in handle.stream(timeout_s=60):
        if envelope.type is EventType.STARTED:
            cli_pid = int(envelope.data["pid"])
        for text in envelope_texts(envelope):
            if text.startswith("grandchild_pid="):
                grandchild = int(text.split("=")[1])
        if grandchild and _has_tool_result(envelope):
            return cli_pid, grandchild
    raise AssertionError("the run ended before its grandchild started")


def _has_tool_result(envelope: Envelope) -> bool:
    if envelope.type is not EventType.MESSAGE:
        return False
    return any(b.get("type") == "tool_result" for b in envelope.data.get("content", []))


def kill_if_alive(*pids: int) -> None:
    """Test cleanup: SIGKILL whichever of these processes is still running."""
    for pid in pids:
        if pid and is_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Proc:
    """A process identified by pid + start time (ticks None: already gone when learned)."""

    pid: int
    ticks: int | None

    def alive(self) -> bool:
        """True while this very process exists and is not a zombie."""
        stat = read_stat(self.pid)
        return (
            self.ticks is not None
            and stat is not None
            and stat.start_ticks == self.ticks
            and stat.state not in ("Z", "X")
        )

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


def is_spare(pid: int) -> bool:
    """Whether pid is a worker's spare work horse, waiting for a job (worker/spare.py)."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip() == SPARE_NAME
    except OSError:
        return False
