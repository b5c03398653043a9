"""Garbage collection for a `claude-queue serve` process.

A gateway's heap is mostly long-lived: a thousand open streams hold a few hundred
objects each, and the per-event objects die by reference counting. CPython's
automatic full collections still walk that whole heap, and with 1,000 SSE clients a
walk took 100-600 ms: every stream of the process stalled that long, and found
nothing to free (`collected=0` in every one of 28 full collections of a bench run).

So a serving process: freezes what start-up built (imports, the app: never garbage),
leaves the young generations to the automatic collector (each walk is small), and
runs the full collection itself, on a timer thread, every FULL_COLLECTION_INTERVAL_S,
so cycles that reach the old generation are still freed, at a known rate. Not applied
to an app mounted in someone else's process: their collector is theirs to tune.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Final

import structlog

log = structlog.get_logger(__name__)

FULL_COLLECTION_INTERVAL_S: Final = 60.0
# Full collections come from the timer only: the old generation's own trigger would
# need this many young-generation collections first.
_NO_AUTOMATIC_FULL: Final = 1_000_000
_THREAD_NAME: Final = "claude-queue-gc"


def tune_for_serving(interval_s: float = FULL_COLLECTION_INTERVAL_S) -> threading.Thread:
    """Apply the policy to this process (once); returns the timer thread."""
    for thread in threading.enumerate():
        if thread.name == _THREAD_NAME:
            return thread
    gc.collect()
    gc.freeze()
    young, middle, _old = gc.get_threshold()
    gc.set_threshold(young, middle, _NO_AUTOMATIC_FULL)
    thread = threading.Thread(
        target=_collect_every, args=(interval_s,), name=_THREAD_NAME, daemon=True
    )
    thread.start()
    return thread


def _collect_every(interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        started = time.perf_counter()
        freed = gc.collect()
        log.debug(
            "gc_full_collection", freed=freed, pause_ms=round(1e3 * (time.perf_counter() - started))
        )
