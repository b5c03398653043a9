"""A fork-mode worker forks its next work horse ahead (worker/spare.py): the spare runs
the next jobs (HORSE_RUNS of them), a new one waits after it, a spare that died is
replaced by a fork, and no spare outlives its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq.exceptions import StopRequested

from producer import Client
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import is_spare, wait_until
from worker.entry import build_worker
from worker.proctree import is_alive, read_stat
from worker.rqworker import ForkingClaudeWorker
from worker.spare import open_connections

WAIT_S = 30.0


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def _spares(worker_pid: int) -> list[int]:
    return [pid for pid in _children(worker_pid) if is_spare(pid)]


def _one_spare(worker_pid: int) -> int:
    found: list[int] = []

    def one() -> bool:
        found[:] = _spares(worker_pid)
        return len(found) == 1

    wait_until(one, timeout_s=WAIT_S)
    return found[0]


def _parent(pid: int) -> int | None:
    stat = read_stat(pid)
    return None if stat is None else stat.ppid


def _run_a_canceled_job(client: Client, cwd: Path, spare: int, session: str) -> None:
    handle = client.submit(session_id=session, prompt="FAKE: hang", cwd=str(cwd))
    started = next(e for e in handle.stream(timeout_s=WAIT_S) if e.type == "started")
    # The CLI's parent is the work horse: the process that was the spare.
    assert _parent(int(started.data["pid"])) == spare
    assert not is_spare(spare)  # renamed once it took the job
    handle.cancel()
    assert handle.wait(timeout_s=WAIT_S).status == "interrupted"


def _forking_worker(start_worker: WorkerFactory, settings: Settings, horse_runs: int) -> int:
    """A fork-mode worker with this HORSE_RUNS: its pid, once it has its spare."""
    update = {"horse_runs": horse_runs}
    worker = start_worker(mode="fork", settings_override=settings.model_copy(update=update))
    _one_spare(worker.pid)
    return worker.pid


def test_the_spare_runs_jobs_until_horse_runs_then_a_new_one_waits(
    client: Client, start_worker: WorkerFactory, settings: Settings, tmp_path: Path
) -> None:
    worker_pid = _forking_worker(start_worker, settings, horse_runs=2)
    spare = _one_spare(worker_pid)
    _run_a_canceled_job(client, tmp_path, spare, "spare-1")
    # Its first job is over: the same process waits for the next one, as the spare.
    assert _one_spare(worker_pid) == spare
    _run_a_canceled_job(client, tmp_path, spare, "spare-1b")
    wait_until(lambda: not is_alive(spare), timeout_s=WAIT_S)  # its second and last
    assert _one_spare(worker_pid) != spare
    handle = client.submit(session_id="spare-1c", prompt="hello", cwd=str(tmp_path))
    assert handle.wait(timeout_s=WAIT_S).status == "succeeded"


def test_with_horse_runs_1_every_job_gets_a_new_horse(
    client: Client, start_worker: WorkerFactory, settings: Settings, tmp_path: Path
) -> None:
    worker_pid = _forking_worker(start_worker, settings, horse_runs=1)
    spare = _one_spare(worker_pid)
    _run_a_canceled_job(client, tmp_path, spare, "spare-1")
    wait_until(lambda: not is_alive(spare), timeout_s=WAIT_S)  # the horse ended
    assert _one_spare(worker_pid) != spare


def test_a_job_still_runs_when_its_spare_died_first(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = start_worker(mode="fork")
    spare = _one_spare(worker.pid)
    os.kill(spare, signal.SIGKILL)
    # Dead, not dying: a spare still exiting can take the handoff line (the pipe's read
    # end is open until it is gone); RQ then failed the job, and in one CI run its
    # never-claimed run was still queued when the stream gave up after WAIT_S. A
    # zombie, or no process at all, is what "died first" means here.
    wait_until(lambda: (stat := read_stat(spare)) is None or stat.state == "Z", timeout_s=WAIT_S)
    handle = client.submit(session_id="spare-2", prompt="hello", cwd=str(tmp_path))
    assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
    # The dead spare was reaped (no zombie left under the worker) and replaced.
    wait_until(lambda: spare not in _children(worker.pid), timeout_s=WAIT_S)
    assert _one_spare(worker.pid) != spare
    log = (tmp_path / "w0.log").read_text()
    assert "spare_horse_gone" in log


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_no_spare_outlives_its_worker(start_worker: WorkerFactory, how: str) -> None:
    worker = start_worker(mode="fork")
    spare = _one_spare(worker.pid)
    worker.send_signal(signal.Signals[how])
    worker.wait(timeout=WAIT_S)
    # Stopped: the worker's teardown killed and reaped it; killed: the death signal.
    wait_until(lambda: not is_alive(spare), timeout_s=WAIT_S)


@pytest.mark.parametrize("wanted", [True, False])
def test_the_setting_decides_whether_a_spare_is_forked(settings: Settings, wanted: bool) -> None:
    rq_worker = build_worker(settings.model_copy(update={"spare_horse": wanted}), mode="fork")
    assert isinstance(rq_worker, ForkingClaudeWorker)
    try:
        assert rq_worker.dequeue_job_and_maintain_ttl(None) is None  # empty queue, no wait
        spare = rq_worker._spare
        assert (spare is not None) == wanted
    finally:
        rq_worker.teardown()  # kills and reaps the spare, if any
    assert rq_worker._spare is None
    if spare is not None:
        assert not is_alive(spare.pid)


def test_a_stop_signal_while_the_spare_is_forked_is_handled_once_the_fork_returns(
    settings: Settings,
) -> None:
    # Python may run the handler inside os.fork()'s at-fork hooks, which drop whatever
    # it raises: a SIGTERM there once left an idle worker waiting on its queues.
    rq_worker = build_worker(settings, mode="fork")
    assert isinstance(rq_worker, ForkingClaudeWorker)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rq_worker._forking = True
        rq_worker.request_stop(signal.SIGTERM, None)  # deferred, nothing raised
        assert rq_worker._deferred_stops
        rq_worker._forking = False
        with pytest.raises(StopRequested):  # RQ's idle stop, raised where it counts
            rq_worker._run_deferred_stops()
        assert rq_worker._deferred_stops is None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_spare_opens_the_connections_a_run_holds(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, client_name="cq-open-test")

    def named() -> int:
        listed = client.client_list()
        return sum(1 for c in listed if c.get("name") == "cq-open-test")

    try:
        open_connections(client, 3)
        pool = client.connection_pool
        idle = list(pool._available_connections)
        assert len(idle) == 3 and all(c._sock is not None for c in idle)
        assert named() == 3  # the listing itself borrows one of them
        open_connections(client, 3)  # already open: none added
        assert named() == 3
    finally:
        client.close()


def test_a_horse_left_with_a_thread_or_a_child_is_not_fit_for_another_job() -> None:
    # In a process of its own: the predicate counts the threads and children of the
    # process it runs in, and pytest's has its own.
    code = """
import subprocess, sys, threading
from worker.spare import _fit_for_another
assert _fit_for_another()
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
assert not _fit_for_another()
stop.set()
thread.join()
assert _fit_for_another()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
assert not _fit_for_another()
child.kill()
child.wait()
assert _fit_for_another()
print("checked")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.splitlines()[-1:] == ["checked"], done.stdout + done.stderr
