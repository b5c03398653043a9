"""RQ's worker heartbeat in one round trip, and not again within a second.

RQ's `heartbeat()` sends HSET and two EXPIREs as three commands when no pipeline is
given, and a worker sends several of them around each job (its loop, the dequeue, the
suspension check): nine round trips a job before its own bookkeeping (a MONITOR of a
fork-mode worker). Here a heartbeat without a pipeline goes as one MULTI/EXEC, and one
asked for within a second of the last, with the same TTL and no heartbeat in a
pipeline between them, is left out: its key would expire less than a second later, and
`last_heartbeat` would move by as little.
"""

from __future__ import annotations

import time
from typing import Any

# A heartbeat this soon after the last, with the same TTL, changes nothing that matters.
_COALESCE_S = 1.0


class OneTripHeartbeatMixin:
    """For RQ worker classes (it calls RQ's `heartbeat`)."""

    connection: Any
    _last_beat: tuple[float, int | None] | None = None  # (monotonic time, timeout)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # part of a pipeline RQ runs anyway
            # It may set another TTL (a job's): the next heartbeat must go out, or an
            # idle worker's key would keep a job's short TTL and expire while it waits.
            self._last_beat = None
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
            return
        now = time.monotonic()
        last = self._last_beat
        if last is not None and last[1] == timeout and now - last[0] < _COALESCE_S:
            return
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipeline=pipe)  # type: ignore[misc]
            pipe.execute()
        self._last_beat = (now, timeout)
