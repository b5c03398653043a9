"""How fast this host runs Python right now: a fixed pure-Python loop, timed.

On this shared VM the same code's figures move by 2-3x from one hour to the next
(bench/README.md calls these phases). Every results.json records the loop's time at the
start and at the end of the run, and the round trip of one byte to another process
over a pipe, so two runs can be compared knowing whether the host itself was slower;
a figure is never adjusted by either.
"""

from __future__ import annotations

import contextlib
import os
import select
import statistics
import subprocess
import sys
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


_ECHO_TIMEOUT_S = 1.0
_ECHO = "import os\nwhile (b := os.read(0, 1)):\n    os.write(1, b)\n"


def pipe_round_trip_us(trips: int = 2000) -> float | None:
    """Median time for one byte to go to another process over a pipe and back, in us;
    None if the echo process failed (a run's results are never lost to this probe).

    The loop above measures compute; this measures waking a sleeping process, which is
    what the latency rows pay at every hop, and which moves with the VM's scheduling
    even when the loop's time does not."""
    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    send, receive = child.stdin.fileno(), child.stdout.fileno()
    times = []
    try:
        for _ in range(trips + 100):  # the first 100: warm-up
            t0 = time.perf_counter()
            os.write(send, b"x")
            # Bounded: an echo that stopped answering costs a second, not the run.
            if not select.select([receive], [], [], _ECHO_TIMEOUT_S)[0]:
                return None
            if os.read(receive, 1) != b"x":
                return None
            times.append((time.perf_counter() - t0) * 1e6)
    except OSError:
        return None
    finally:
        _stop(child)
    return round(statistics.median(times[100:]), 1)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Close the echo's pipes and reap it (killed if it does not exit by itself)."""
    assert child.stdin is not None and child.stdout is not None
    with contextlib.suppress(OSError):
        child.stdin.close()
    try:
        child.wait(timeout=_ECHO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    child.stdout.close()
