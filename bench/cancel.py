"""4. Cancel latency: `client.cancel()` -> `finished` received, and nothing survives.

The fake CLI (`FAKE: grandchild seconds=300`) starts a grandchild in its own
session and prints `grandchild_pid=<pid>`. Once the subscriber sees that text it
calls `client.cancel(session, wait=False)` and times the call -> `finished`.
The CLI pid (from `started`) and the grandchild are then looked up in /proc
(pid + start time): any still alive counts as a survivor. Baseline: the same CLI
spawned locally; `os.kill(SIGKILL)` both processes, reap the CLI and wait (pidfd)
for the grandchild to exit.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time

from bench import procs
from bench.harness import Harness, Workers
from bench.stats import MS, Row, median, percentile, trials_row

QUEUE = "cqbench"
PROMPT = "FAKE: grandchild seconds=300"
TARGET_P50_MS = 10.0
TARGET_P99_MS = 25.0
_GRANDCHILD = re.compile(r"grandchild_pid=(\d+)")
_TIMEOUT_S = 60.0


def _grandchild_in(content: object) -> int | None:
    for block in content if isinstance(content, list) else []:
        text = block.get("text") if isinstance(block, dict) else None
        match = _GRANDCHILD.search(text) if isinstance(text, str) else None
        if match:
            return int(match.group(1))
    return None


def queue_cancel(h: Harness, workers: Workers) -> tuple[float, int, str]:
    """(ms cancel -> finished, surviving processes, finished status)."""
    session = h.session("cancel")
    client = workers.client
    handle = client.submit(session_id=session, prompt=PROMPT, cwd=str(h.workdir))
    tracked: list[tuple[int, int | None]] = []
    t0 = t1 = 0.0
    status = ""
    try:
        for envelope in handle.stream(timeout_s=_TIMEOUT_S):
            now = time.perf_counter()
            if envelope.type == "started":
                pid = int(envelope.data["pid"])
                tracked.append((pid, procs.start_ticks(pid)))
            elif envelope.type == "message" and not t0:
                grandchild = _grandchild_in(envelope.data.get("content"))
                if grandchild is not None:
                    tracked.append((grandchild, procs.start_ticks(grandchild)))
                    t0 = time.perf_counter()
                    client.cancel(session, wait=False)
            elif envelope.type == "finished":
                t1, status = now, str(envelope.data.get("status"))
        survivors = sum(procs.alive(pid, ticks) for pid, ticks in tracked)
    finally:
        for pid, ticks in tracked:  # never leave a 300 s sleeper behind, whatever happened
            procs.kill_if_alive(pid, ticks)
    h.drop_session(session)
    if not (t0 and t1) or len(tracked) != 2:
        raise RuntimeError(f"cancel run did not go as scripted (tracked {tracked}, {status})")
    return (t1 - t0) * MS, survivors, status


def direct_kill(h: Harness) -> float:
    """ms to SIGKILL a locally spawned CLI + grandchild and see both gone."""
    proc = subprocess.Popen(
        procs.cli_argv(procs.FAKE_CLI),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=h.cli_env(),
        cwd=h.workdir,
    )
    assert proc.stdin is not None and proc.stdout is not None
    grandchild = 0
    try:
        proc.stdin.write(procs.prompt_line(PROMPT))
        proc.stdin.close()
        for line in proc.stdout:
            match = _GRANDCHILD.search(line.decode(errors="replace"))
            if match:
                grandchild = int(match.group(1))
                break
        if not grandchild:
            raise RuntimeError("the direct CLI never printed its grandchild pid")
        pidfd = os.pidfd_open(grandchild)
        try:
            t0 = time.perf_counter()
            os.kill(proc.pid, signal.SIGKILL)
            os.kill(grandchild, signal.SIGKILL)
            proc.wait()
            ready, _, _ = select.select([pidfd], [], [], 10.0)
            t1 = time.perf_counter()
        finally:
            os.close(pidfd)
        if not ready:
            raise RuntimeError("the grandchild outlived SIGKILL")
        return (t1 - t0) * MS
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if grandchild:
            procs.kill_if_alive(grandchild, None)


def run(h: Harness) -> list[Row]:
    trials = 5 if h.quick else 30
    workers = h.workers(QUEUE)
    queue: list[float] = []
    direct: list[float] = []
    survivors = 0
    statuses: set[str] = set()
    for i in range(trials + 1):  # the first round is the warm-up
        d = direct_kill(h)
        h.await_idle(workers)
        q, left, status = queue_cancel(h, workers)
        if i:
            direct.append(d)
            queue.append(q)
            survivors += left
            statuses.add(status)
    p50, p99 = median(queue), percentile(queue, 99)
    latency = trials_row(
        "cancel: cancel->finished",
        "ms",
        [[v] for v in queue],
        baseline=median(direct),
        baseline_name="local SIGKILL of CLI + grandchild, reap, pidfd wait",
        target=f"p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms",
        met=p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS,
        note=f"{trials} runs; finished status {sorted(statuses)}",
    )
    latency.detail = {"baseline_p99": percentile(direct, 99)}
    alive_row = Row(
        name="cancel: surviving processes",
        unit="procs",
        n=trials * 2,
        median=float(survivors),
        p99=None,
        trial_min=float("nan"),
        trial_max=float("nan"),
        baseline=0.0,
        baseline_name="the direct kill (both processes confirmed gone)",
        target="0",
        met=survivors == 0,
        note="CLI + grandchild per run, checked in /proc (pid + start time) at `finished`",
    )
    return [latency, alive_row]
