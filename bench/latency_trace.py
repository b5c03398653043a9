"""Where one event's latency goes: `python -m bench.latency_trace [-n N] [--trials T]`.

Runs the latency scenario (`FAKE: many n=N rate=1000 size=200`, a sync `Client.stream`
subscriber) against a fork-mode worker whose work horses time their own steps
(bench/lattrace/sitecustomize.py, on the worker's PYTHONPATH only), and prints the
median and p90 of each step for the reads that held exactly one stamped line:

    CLI write -> the horse's read returns -> parsing and queuing the line (_take_lines)
    -> the flush -> its script call (send, Redis, reply) -> the flush returns,
    and from the script call's start to the subscriber's receipt.

The horse's own timings cost it a few microseconds a read (a file append after the
flush); the subscriber's side is untouched. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.direct import first_text
from bench.harness import DEFAULT_URL, RUN_TIMEOUT_S, Harness
from bench.latency import scenario_prompt

QUEUE = "cqbench-trace"
_HERE = Path(__file__).resolve().parent
STEPS = (
    ("CLI write -> horse read returns", 0, 1),
    ("read returns -> parsing starts", 1, 2),
    ("parsing and queuing the line", 2, 3),
    ("parsed -> flush starts", 3, 4),
    ("flush starts -> script call", 4, 5),
    ("script call (send, Redis, reply)", 5, 6),
    ("reply -> flush returns", 6, 7),
)


def _received(h: Harness, env: dict[str, str], n: int, trials: int) -> dict[int, int]:
    """The CLI's write stamp -> the subscriber's receipt (monotonic ns), every event."""
    workers = h.workers(QUEUE, worker_env=env)
    received: dict[int, int] = {}
    for _ in range(trials):
        session = h.session("trace")
        handle = workers.client.submit(
            session_id=session, prompt=scenario_prompt(n), cwd=str(h.workdir)
        )
        for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
            now = time.monotonic_ns()
            text = first_text(envelope.data.get("content")) if envelope.type == "message" else None
            if text and text.startswith("t="):
                received[int(text[2:].split(";", 1)[0])] = now
        h.drop_session(session)
    return received


def _rows(directory: Path, received: dict[int, int]) -> list[list[int]]:
    """One row of timestamps a single-line read: the horse's eight, then the receipt."""
    rows = []
    for path in directory.glob("*.txt"):
        for line in path.read_text().splitlines():
            *stamps, lines = map(int, line.split())
            if lines == 1 and stamps[0] in received and stamps[5]:
                rows.append([*stamps, received[stamps[0]]])
    return rows


def _show(rows: list[list[int]]) -> None:
    def line(name: str, values: list[float]) -> None:
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        print(f"  {name:40s} p50 {statistics.median(values):8.1f} us   p90 {p90:8.1f} us")

    print(f"{len(rows)} reads of one stamped line")
    for name, start, end in STEPS:
        line(name, [(r[end] - r[start]) / 1000 for r in rows])
    line("script call starts -> subscriber has it", [(r[8] - r[5]) / 1000 for r in rows])
    line("CLI write -> subscriber has it", [(r[8] - r[0]) / 1000 for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_trace", description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="events a run (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=3, help="runs (default: %(default)s)")
    parser.add_argument("--redis-url", default=os.environ.get("CQBENCH_REDIS_URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cq-lattrace-") as tmp:
        env = {
            "PYTHONPATH": str(_HERE / "lattrace"),
            "CQBENCH_LATTRACE_DIR": tmp,
            "CQBENCH_REPO": str(_HERE.parent),
        }
        h = Harness(quick=False, redis_url=args.redis_url, mode="fork")
        try:
            received = _received(h, env, args.n, args.trials)
        finally:
            h.close(keep_files=False)
        rows = _rows(Path(tmp), received)
    if not rows:
        print("no traced reads: did the worker load bench/lattrace/sitecustomize.py?")
        return 1
    _show(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
