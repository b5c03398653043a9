"""How fast this host runs Python right now: a fixed pure-Python loop, timed.

On this shared VM the same code's figures move by 2-3x from one hour to the next
(bench/README.md calls these phases). Every results.json records the loop's time at the
start and at the end of the run, so two runs can be compared knowing whether the host
itself was slower; a figure is never adjusted by it.
"""

from __future__ import annotations

import statistics
import time

LOOP_ITERATIONS = 3_000_000


def python_loop_ms(repeats: int = 3) -> float:
    """Median wall time of `repeats` loops of LOOP_ITERATIONS integer additions, in ms."""
    times = []
    for _ in range(repeats):
        total = 0
        t0 = time.perf_counter()
        for i in range(LOOP_ITERATIONS):
            total += i
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)
