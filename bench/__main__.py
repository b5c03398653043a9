"""`python -m bench [--quick] [--only NAME,...]`: run the benchmarks, print, save.

Exit status: 0 when every selected benchmark ran (targets missed or not), 1 when
one crashed, 130 when interrupted. Timings are never asserted here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from rich.console import Console

from bench import hostspeed, report
from bench.harness import DEFAULT_URL, Harness
from bench.stats import Row

# name -> module with `run(h: Harness) -> list[Row]`, in running order.
BENCHMARKS = {
    "latency": "bench.latency",
    "throughput": "bench.throughput",
    "dispatch": "bench.dispatch",
    "cancel": "bench.cancel",
    "replay": "bench.replay",
    "scale": "bench.scale",
    "realcli": "bench.realcli",
    "approvals": "bench.approvals",
    "warm": "bench.warm",
    "gateway": "bench.gateway",
    "archive": "bench.archive",
    "sentinel": "bench.sentinel",
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, a smoke run (< ~90 s)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CQBENCH_REDIS_URL", DEFAULT_URL),
        help="Redis db the bench owns and flushes (default: %(default)s)",
    )
    parser.add_argument(
        "--worker-mode",
        choices=["fork", "simple"],
        default="fork",
        help="`claude-queue worker --mode` of the workers under test (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {list(BENCHMARKS)}")
    args.names = names
    return args


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    console = Console(highlight=False)
    if not console.is_terminal:  # CI logs: wide enough that the table stays on one line
        console = Console(highlight=False, width=170)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    mode = "quick" if args.quick else "full"
    console.print(
        f"[bold]claude-queue bench[/] ({mode}, workers --mode {args.worker_mode}): "
        + ", ".join(args.names)
    )
    rows: list[Row] = []
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    loop_at_start, wake_at_start = hostspeed.python_loop_ms(), hostspeed.pipe_round_trip_us()
    harness = Harness(quick=args.quick, redis_url=args.redis_url, mode=args.worker_mode)
    try:
        for name in args.names:
            module = importlib.import_module(BENCHMARKS[name])
            bench = cast(Callable[[Harness], list[Row]], module.run)
            t0 = time.monotonic()
            with console.status(f"running {name} ..."):
                try:
                    new_rows = bench(harness)
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    console.print(f"[red]{name} crashed[/]")
                    console.print(traceback.format_exc())
                    new_rows = []
            seconds[name] = round(time.monotonic() - t0, 1)
            rows.extend(new_rows)
            console.print(f"  {name}: {seconds[name]:.1f} s")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping every process the bench started[/]")
        harness.close(keep_files=False)
        return 130
    harness.close(keep_files=bool(errors))
    loop_at_end, wake_at_end = hostspeed.python_loop_ms(), hostspeed.pipe_round_trip_us()
    total = round(time.monotonic() - started, 1)
    title = f"claude-queue bench ({mode}, {total:.0f} s)"
    report.show(console, rows, title, errors)
    extra: dict[str, Any] = {
        "worker_mode": args.worker_mode,
        "load_avg_at_start": load_at_start,
        "host_speed": {
            "python_loop_iterations": hostspeed.LOOP_ITERATIONS,
            "python_loop_ms_at_start": loop_at_start,
            "python_loop_ms_at_end": loop_at_end,
            "pipe_round_trip_us_at_start": wake_at_start,
            "pipe_round_trip_us_at_end": wake_at_end,
        },
        "seconds": {**seconds, "total": total},
        "client_log_events": dict(harness.logs.counts),
        "client_log_samples": harness.logs.samples,
    }
    if errors:
        extra["files_kept"] = str(harness.tmp)
    path = report.write(rows, quick=args.quick, argv=argv, errors=errors, extra=extra)
    console.print(
        f"host speed: {hostspeed.LOOP_ITERATIONS:,}-iteration Python loop {loop_at_start:.0f} ms"
        f" at the start, {loop_at_end:.0f} ms at the end; pipe round trip"
        f" {_us(wake_at_start)} / {_us(wake_at_end)} us\nresults: {path}"
    )
    if harness.logs.counts:
        console.print(f"client log events: {dict(harness.logs.counts)}")
        for name, sample in harness.logs.samples.items():
            console.print(f"  first {name}: {sample}")
    if errors:
        console.print(f"worker logs kept in {harness.tmp}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
