"""worker.proctree's kill rounds count what they SIGKILLed as alive until it is a
zombie or gone: a dying process loses its environ (the run's marker) before that, so a
marker scan alone could call the run over while its CLI was still exiting."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.helpers import wait_until
from worker.proctree import _dying, read_stat, start_ticks


def test_a_signalled_process_is_dying_until_it_is_a_zombie() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = start_ticks(proc.pid)
        assert ticks is not None
        assert _dying({proc.pid: ticks}) == {proc.pid}
        assert _dying({proc.pid: ticks + 1}) == set()  # another process with that pid
        assert _dying({proc.pid: None}) == set()  # gone before its start time was read
        proc.send_signal(signal.SIGKILL)
        # Not reaped yet: a zombie, which is dead to the run.
        wait_until(lambda: (stat := read_stat(proc.pid)) is not None and stat.state == "Z")
        assert _dying({proc.pid: ticks}) == set()
    finally:
        proc.kill()
        proc.wait()
    assert _dying({proc.pid: ticks}) == set()
