"""9. Warm sessions: a session's follow-up run on its live CLI vs a cold resume.

Each trial is one new session on each of two simple-mode workers: a first run (not
measured), then the follow-up run, timed `submit()` -> `finished` received. On the
warm worker (WARM_IDLE_S default) the follow-up's prompt goes to the CLI the first
run left running; on the cold one (WARM_IDLE_S=0, otherwise identical) it starts a
new CLI with `--resume`. Trials alternate between the two, and which goes first.
Done for the fake CLI and for the real CLI against the fake model API.

Memory: after each warm follow-up its CLI sits idle in the worker's pool; its RSS
(VmRSS of the CLI and its descendants, from /proc) is reported, next to the RSS of
the idle simple-mode worker that holds it (same run).

Run alone: `.venv/bin/python -m bench.warm [--quick]`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.harness import PREFIX, READY_TIMEOUT_S, RUN_TIMEOUT_S, Harness, Workers
from bench.stats import MS, Row, median, percentile, skipped_row, trials_row
from devtools.fake_anthropic import FakeAnthropic
from producer import Client

TARGET_FAKE = 0.3  # warm p50 <= 0.3 x cold p50 (fake CLI)
TARGET_REAL = 0.2  # warm p50 <= 0.2 x cold p50 (real CLI)
REAL_ANSWER = "Hello from the fake model."
REAL_PROMPTS = ("Say hello in five words.", "And once more, please.")
FAKE_PROMPTS = ("first question", "follow-up question")


@dataclass(frozen=True, slots=True)
class Arm:
    """One side of the comparison: a simple-mode worker, warm CLIs on or off."""

    label: str
    queue: str
    prefix: str  # its own key prefix, so its own scope on this host (see _compare)
    warm_idle_s: float | None  # None: the default (warm); 0: off (cold)


@dataclass(frozen=True, slots=True)
class FollowUp:
    ms: float  # submit -> `finished` received
    warm: bool  # `started.warm`
    cold_reason: str | None
    pid: int  # the CLI that ran it


def _tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its live descendants, MiB."""
    total, pending, seen = 0.0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total += procs.rss_mb(current)
        pending.extend(procs.children(current))
    return total


@contextmanager
def _simple_worker(
    h: Harness, arm: Arm, claude_bin: str | Path, cli_env: dict[str, str]
) -> Iterator[Workers]:
    """A `claude-queue worker --mode simple` on the arm's queue, whatever `h.mode` says
    (fork mode never keeps a CLI warm); stopped on the way out."""
    settings = h.settings(arm.queue, claude_bin).model_copy(update={"key_prefix": arm.prefix})
    worker_env = {
        "CLAUDE_QUEUE_REDIS_URL": h.redis_url,
        "CLAUDE_QUEUE_KEY_PREFIX": arm.prefix,
        "CLAUDE_QUEUE_QUEUE_NAME": arm.queue,
        "CLAUDE_QUEUE_CLAUDE_BIN": str(claude_bin),
        "CLAUDE_QUEUE_EXTRA_ENV": json.dumps({"HOME": str(h.home), **cli_env}),
        "CLAUDE_QUEUE_LOG_LEVEL": "warning",
        "CLAUDE_QUEUE_LOG_FORMAT": "json",
    }
    if arm.warm_idle_s is not None:
        worker_env["CLAUDE_QUEUE_WARM_IDLE_S"] = str(arm.warm_idle_s)
    name = f"{arm.queue}-w"
    argv = [sys.executable, "-m", "producer", "worker", "--name", name, "--mode", "simple"]
    log_path = h.tmp / f"{arm.queue}.log"
    with ExitStack() as stack:
        process = procs.start(argv, procs.base_env(worker_env), log_path)
        stack.callback(procs.stop, process)
        client = Client(settings)
        stack.callback(client.close)
        workers = Workers([name], process, settings, client, log_path)
        if not h.await_idle(workers, READY_TIMEOUT_S):
            raise RuntimeError(f"worker {name} not ready; see {log_path}")
        yield workers


def _follow_up(h: Harness, workers: Workers, prompts: tuple[str, str], expect: str) -> FollowUp:
    """A new session: its first run, then the timed follow-up."""
    client = workers.client
    session = h.session("warm")
    first = client.submit(session_id=session, prompt=prompts[0], cwd=str(h.workdir))
    done = first.wait(timeout_s=RUN_TIMEOUT_S)
    if done.status != "succeeded":
        raise RuntimeError(f"first run of {session} ended {done.status}: {done}")
    h.await_idle(workers)
    started: dict[str, Any] = {}
    finished: dict[str, Any] = {}
    answer = ""
    t0 = time.perf_counter()
    handle = client.submit(session_id=session, prompt=prompts[1])
    t1 = 0.0
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        if envelope.type == "started":
            started = envelope.data
        elif envelope.type == "message" and envelope.data.get("role") == "assistant":
            answer += json.dumps(envelope.data.get("content"))
        elif envelope.type == "finished":
            t1, finished = time.perf_counter(), envelope.data
    if finished.get("status") != "succeeded" or not started or expect not in answer:
        raise RuntimeError(f"follow-up of {session} went wrong: {finished}, answer {answer!r}")
    return FollowUp(
        ms=(t1 - t0) * MS,
        warm=bool(started.get("warm")),
        cold_reason=started.get("cold_reason"),
        pid=int(started["pid"]),
    )


@dataclass(slots=True)
class Comparison:
    warm: list[FollowUp]
    cold: list[FollowUp]
    warm_cli_mb: list[float]
    worker_mb: float


def _compare(
    h: Harness,
    label: str,
    claude_bin: str | Path,
    cli_env: dict[str, str],
    prompts: tuple[str, str],
    expect: str,
    trials: int,
) -> Comparison:
    # Each arm is a deployment of its own (key prefix, hence scope): a worker's orphan
    # sweep kills marked processes of its scope whose run is not running, and spares
    # only its *own* warm CLIs, so any other worker of the same scope on this host
    # (the cold arm, or the workers other benchmarks left running) would kill the
    # warm arm's parked CLIs within REAPER_INTERVAL_S.
    warm_arm = Arm("warm", f"{PREFIX}-warm-{label}", f"{PREFIX}-warm", None)
    cold_arm = Arm("cold", f"{PREFIX}-cold-{label}", f"{PREFIX}-cold", 0.0)
    out = Comparison([], [], [], 0.0)
    with (
        _simple_worker(h, warm_arm, claude_bin, cli_env) as warm_workers,
        _simple_worker(h, cold_arm, claude_bin, cli_env) as cold_workers,
    ):
        for i in range(trials + 1):  # the first round is the warm-up
            order = [(warm_arm, warm_workers), (cold_arm, cold_workers)]
            for arm, workers in order if i % 2 else order[::-1]:
                result = _follow_up(h, workers, prompts, expect)
                if not i:
                    continue
                if arm is warm_arm:
                    out.warm.append(result)
                    if result.warm:  # it is parked again, idle, until the next session
                        out.warm_cli_mb.append(_tree_rss_mb(result.pid))
                else:
                    out.cold.append(result)
        h.await_idle(warm_workers)
        out.worker_mb = sum(procs.rss_mb(pid) for pid in warm_workers.pids().values())
    return out


def _rows(name: str, c: Comparison, target: float, trials: int) -> list[Row]:
    warm_ms = [f.ms for f in c.warm]
    cold_ms = [f.ms for f in c.cold]
    hits = sum(f.warm for f in c.warm)
    cold_hits = sum(f.warm for f in c.cold)
    reasons = sorted({str(f.cold_reason) for f in c.warm if not f.warm})
    misses = "" if hits == len(c.warm) else f"; warm side went cold: {reasons}"
    latency = trials_row(
        f"warm: follow-up submit->finished ({name})",
        "ms",
        [[v] for v in warm_ms],
        baseline=median(cold_ms),
        baseline_name="the same follow-up on a worker with WARM_IDLE_S=0 (new CLI, --resume)",
        target=f"warm p50 <= {target:g}x cold p50",
        met=median(warm_ms) <= target * median(cold_ms),
        note=(
            f"{trials} sessions each, alternating; warm {hits}/{len(c.warm)}, "
            f"cold side warm {cold_hits}/{len(c.cold)}{misses}; "
            f"cold p99 {percentile(cold_ms, 99):.1f} ms"
        ),
    )
    latency.detail = {
        "baseline_p99": percentile(cold_ms, 99),
        "warm_ms": warm_ms,
        "cold_ms": cold_ms,
        "warm_hits": hits,
    }
    memory = trials_row(
        f"warm: idle warm CLI RSS ({name})",
        "MB",
        [[v] for v in c.warm_cli_mb],
        baseline=c.worker_mb,
        baseline_name="the idle simple-mode worker that holds it (VmRSS)",
        note="VmRSS of the parked CLI + its descendants, after each warm follow-up",
    )
    return [latency, memory]


def _real_cli(h: Harness, trials: int) -> list[Row]:
    if not procs.REAL_CLI.exists():
        reason = f"{procs.REAL_CLI} is not installed (make install)"
        return [skipped_row(f"warm: {what} (real CLI)", reason) for what in ("follow-up", "RSS")]
    with FakeAnthropic(default_text=REAL_ANSWER) as api:
        cli_env = {
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "sk-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        c = _compare(h, "real", procs.REAL_CLI, cli_env, REAL_PROMPTS, REAL_ANSWER, trials)
    return _rows("real CLI", c, TARGET_REAL, trials)


def run(h: Harness) -> list[Row]:
    fake_trials, real_trials = (3, 2) if h.quick else (20, 10)
    fake = _compare(
        h, "fake", procs.FAKE_CLI, {}, FAKE_PROMPTS, f"ECHO:{FAKE_PROMPTS[1]}", fake_trials
    )
    return _rows("fake CLI", fake, TARGET_FAKE, fake_trials) + _real_cli(h, real_trials)


def main(argv: list[str]) -> int:
    """Development entry: this benchmark alone, table printed, results.json untouched
    (until it is registered in bench/__main__.py, `python -m bench --only` cannot run it)."""
    import argparse
    import os

    from rich.console import Console

    from bench import report
    from bench.harness import DEFAULT_URL

    parser = argparse.ArgumentParser(prog="python -m bench.warm", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, a smoke run")
    parser.add_argument(
        "--redis-url", default=os.environ.get("CQBENCH_REDIS_URL", DEFAULT_URL), help="flushed"
    )
    args = parser.parse_args(argv)
    h = Harness(quick=args.quick, redis_url=args.redis_url, mode="simple")
    t0 = time.monotonic()
    try:
        rows = run(h)
    finally:
        h.close()
    console = Console(highlight=False, width=170)
    mode = "quick" if args.quick else "full"
    report.show(console, rows, f"warm ({mode}, {time.monotonic() - t0:.0f} s)", {})
    for row in rows:
        console.print(row.name, json.dumps(row.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
