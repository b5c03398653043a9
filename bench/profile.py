"""Profile the hot paths: `python -m bench.profile [--what throughput|latency|replay]`.

Runs one benchmark scenario with py-spy recording the worker process and its
subprocesses (the work horse and the CLI) and pyinstrument timing the
subscriber in this process, then prints the top functions of each.

Needs `py-spy` and `pyinstrument` (not project dependencies):
    .venv/bin/pip install py-spy pyinstrument
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import latency, replay, scale, throughput
from bench.harness import Harness, Workers

QUEUE = "cqbench"


def _scenario(what: str, h: Harness, workers: Workers, n: int) -> Callable[[], object]:
    if what == "throughput":
        return lambda: throughput.queue_rate(h, workers, n)
    if what == "latency":
        return lambda: latency.queue_latencies(h, workers, n)
    if what == "scale":
        return lambda: scale.queue_trial(h, workers, n)
    return lambda: replay.run(h)


def summarize(raw: Path, top: int) -> str:
    """Self and inclusive time per function, per process, from py-spy's raw output."""
    leaf: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses a stack starts with one `process` frame per ancestor; the
        # chain of their commands is the process's role (e.g. worker > worker = a horse).
        process = " > ".join(_command(f) for f in frames if f.startswith("process ")) or "?"
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        count = int(count_text)
        totals[process] += count
        leaf.setdefault(process, Counter())[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive.setdefault(process, Counter())[frame] += count
    out: list[str] = []
    for process, total in totals.most_common():
        out.append(f"== {process[:110]}  ({total} samples)")
        out.append("  self:")
        for frame, count in leaf[process].most_common(top):
            out.append(f"    {100 * count / total:5.1f}%  {frame}")
        out.append("  inclusive:")
        for frame, count in inclusive[process].most_common(top):
            out.append(f"    {100 * count / total:5.1f}%  {frame}")
    return "\n".join(out)


def _command(frame: str) -> str:
    """`process 12:"/x/bin/python -m producer worker --name a"` -> `python -m producer`."""
    words = frame.partition(":")[2].strip('"').split()
    return " ".join([Path(words[0]).name, *(Path(w).name for w in words[1:3])]) if words else "?"


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)" so lines of a function merge
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--what", choices=["throughput", "latency", "replay", "scale"], default="throughput"
    )
    parser.add_argument("-n", type=int, default=50_000, help="events of the run")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cqbench-profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        pyinstrument: Any = importlib.import_module("pyinstrument")
    except ImportError:
        print("pyinstrument is missing: .venv/bin/pip install py-spy pyinstrument")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.what}-worker.txt"
    h = Harness(quick=False)
    try:
        if args.what == "scale":  # the whole pool: supervisor, members, horses, CLIs
            workers = h.workers(scale.QUEUE, processes=scale.WORKERS)
            worker_pid = workers.process.pid
        else:
            workers = h.workers(QUEUE)
            worker_pid = next(iter(workers.pids().values()))
        _scenario(args.what, h, workers, min(args.n, 500))()  # warm-up, not recorded
        spy = subprocess.Popen(
            [
                *(py_spy, "record", "--format", "raw", "-o", str(raw), "--rate", "250"),
                *("--nonblocking", "--subprocesses", "--pid", str(worker_pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let py-spy attach
        profiler = pyinstrument.Profiler(interval=0.0005)
        profiler.start()
        try:
            _scenario(args.what, h, workers, args.n)()
        finally:
            profiler.stop()
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (args.out / f"{args.what}-subscriber.txt").write_text(text)
        print(f"-- subscriber (pyinstrument, this process): {args.out}/{args.what}-subscriber.txt")
        print("\n".join(text.splitlines()[:80]))
        if raw.exists():
            summary = summarize(raw, args.top)
            (args.out / f"{args.what}-worker-summary.txt").write_text(summary)
            print(f"-- worker side (py-spy): {raw}")
            print(summary)
        else:
            print("py-spy wrote nothing (ptrace not permitted?)")
    finally:
        h.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
