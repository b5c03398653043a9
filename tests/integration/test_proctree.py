"""worker/proctree.py on real processes: a subreaper's own-subtree walk finds what the
/proc-wide marker scan finds, and kill_run_tree leaves nothing of the run and nothing
else dead.

The subreaper is a child Python process (this file's HARNESS), so the pytest process
never adopts anything. Its run's CLI stand-in starts a child in a new session, and a
double-forked orphan that only the subreaper adoption keeps in the tree; beside the run
the harness also starts a process of another run, which must survive.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from worker.markers import RUN_MARKER_ENV

REPO = Path(__file__).resolve().parents[2]

# The run's CLI stand-in: prints its setsid child's pid and its orphan's, then waits.
ROOT = """
import os, subprocess, sys, time
quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "start_new_session": True}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], **quiet)
read_end, write_end = os.pipe()
if os.fork() == 0:  # the intermediate: start the orphan, report it, exit at once
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], **quiet)
    os.write(write_end, str(orphan.pid).encode())
    os._exit(0)
os.close(write_end)
orphan_pid = int(os.read(read_end, 64))
os.wait()
print(child.pid, orphan_pid, flush=True)
time.sleep(120)
"""

HARNESS = """
import json, os, subprocess, sys, time
from worker import proctree
assert proctree.enable_subreaper() and proctree.is_subreaper()
marker, run, other_run, escaped = sys.argv[1], sys.argv[3], sys.argv[4], int(sys.argv[5])
root = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE,
                        env={**os.environ, marker: run})
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         env={**os.environ, marker: other_run}, stdout=subprocess.DEVNULL)
child, orphan = (int(p) for p in root.stdout.readline().split())
while proctree.read_stat(orphan).ppid != os.getpid():  # adopted once its parent exited
    time.sleep(0.01)
walked = {s.pid for s in proctree._subtree_stats(run, root.pid) if s.state != "Z"}
scanned = proctree._run_pids(run, root.pid, proctree._all_stats())
killed = proctree.kill_run_tree(run, root.pid)
root.wait()
result = {
    "pids": {"root": root.pid, "child": child, "orphan": orphan, "other": other.pid},
    "walked": sorted(walked), "scanned": sorted(scanned), "killed": killed,
    "alive": sorted(p for p in (child, orphan, other.pid, escaped) if proctree.is_alive(p)),
}
for pid in (child, orphan, other.pid):  # whatever survived a failing kill
    if proctree.is_alive(pid):
        os.kill(pid, 9)
other.wait()
print(json.dumps(result))
"""


def test_the_kill_finds_the_run_below_us_and_beyond_and_spares_other_runs() -> None:
    """The walk finds the run's processes below the subreaper; the scan that confirms
    the end also finds one outside its subtree (started here, by the test process),
    which the walk cannot see."""
    run_id = uuid.uuid4().hex
    escaped = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, RUN_MARKER_ENV: run_id},
        stdout=subprocess.DEVNULL,
    )
    try:
        argv = [HARNESS, RUN_MARKER_ENV, ROOT, run_id, uuid.uuid4().hex, str(escaped.pid)]
        done = subprocess.run(
            [sys.executable, "-c", *argv], cwd=REPO, capture_output=True, timeout=60, check=True
        )
    finally:
        escaped.kill()
        escaped.wait()
    result = json.loads(done.stdout)
    pids = result["pids"]
    below = [pids["root"], pids["child"], pids["orphan"]]
    assert result["walked"] == sorted(below)
    assert result["scanned"] == sorted([*below, escaped.pid])
    assert result["killed"] == 4
    assert result["alive"] == [pids["other"]]
    assert os.getpid() not in below


SPAWNER = """
import os, sys, time
from worker.command import CliCommand
from worker.process import CliProcess
from worker.proctree import death_signal_prefix
prefix = death_signal_prefix() if sys.argv[1] == "prefix" else ()
command = CliCommand(
    argv=[sys.executable, "-c", "import time; time.sleep(60)"],
    env=dict(os.environ), stdin=b"", cwd=None,
)
cli = CliProcess(command, run_id=sys.argv[2], max_line_bytes=1000, stderr_tail_bytes=1000,
                 exec_prefix=prefix)
cli.spawn()
# setpriv arms the signal after its own exec, then execs the CLI: a spawner that died
# before that (a millisecond) would leave the CLI unarmed, to the reaper's orphan sweep.
# So wait until the CLI itself runs (its exe is no longer setpriv's), as any worker
# does, which reads its output for far longer than that.
if prefix:
    while os.path.realpath(f"/proc/{cli.pid}/exe") == os.path.realpath(prefix[0]):
        time.sleep(0.001)
print(cli.pid, len(prefix), flush=True)
os._exit(0)  # no cleanup: only the parent-death signal can end the CLI now
"""


@pytest.mark.parametrize("how", ["prefix", "preexec"])
def test_the_cli_dies_with_the_process_that_spawned_it(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SPAWNER, how, uuid.uuid4().hex],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=True,
    )
    pid, prefix_length = (int(field) for field in done.stdout.split())
    if how == "prefix" and not prefix_length:
        pytest.skip("util-linux's setpriv is not installed")
    assert (prefix_length > 0) == (how == "prefix")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        ready, _, _ = select.select([pidfd], [], [], 10.0)
    finally:
        os.close(pidfd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    assert ready, "the CLI outlived the process that spawned it"


def test_kernel_threads_are_told_apart_and_never_read_for_a_marker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import proctree

    me = proctree.read_stat(os.getpid())
    assert me is not None and not me.kernel
    kthreadd = proctree.read_stat(2)
    comm = Path("/proc/2/comm")
    if kthreadd is None or not comm.exists() or comm.read_text().strip() != "kthreadd":
        pytest.skip("no kthreadd in this pid namespace")
    assert kthreadd.kernel
    # A marker scan reads no kernel thread's environment: none is a run's process.
    read: list[int] = []

    def has_marker(pid: int, marker: bytes) -> bool:
        read.append(pid)
        return False

    monkeypatch.setattr(proctree, "_has_marker", has_marker)
    stats = proctree._all_stats()
    assert proctree._run_pids(uuid.uuid4().hex, None, stats) == set()
    kernel = {s.pid for s in stats if s.kernel}
    assert kernel and read and not kernel & set(read)
