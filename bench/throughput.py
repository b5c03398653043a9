"""2. Throughput: events/s delivered to one subscriber for a burst of CLI output.

`FAKE: mixed n=50000` prints 50,000 lines of 200 B - 4 KB as fast as the pipe
takes them. The rate is counted from the first content event (message or
stream_event) to the last event received (`finished` through the queue, the
`result` line directly), so the CLI's own start-up and line building are not
in it. Baseline: the same CLI run as a subprocess, read in 1 MiB chunks and
parsed in-process with `parse_line`.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import redis

from bench import procs
from bench.direct import CONTENT_TYPES, parse_run
from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.stats import Row, median

QUEUE = "cqbench"
TARGET_RATIO = 0.5  # issue 18; the aim beyond it: 50,000 events/s


def _prompt(n: int) -> str:
    return f"FAKE: mixed n={n} seed=1"


def queue_rate(h: Harness, workers: Workers, n: int) -> tuple[float, int]:
    """Events/s seen by a sync `Client.stream` subscriber, and the event count."""
    session = h.session("throughput")
    handle = workers.client.submit(session_id=session, prompt=_prompt(n), cwd=str(h.workdir))
    count, first, last = 0, 0.0, 0.0
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.perf_counter()
        if count == 0 and envelope.type not in CONTENT_TYPES:
            continue
        if count == 0:
            first = now
        count += 1
        last = now
        if envelope.type == "finished" and envelope.data.get("status") != "succeeded":
            raise RuntimeError(f"throughput run ended {envelope.data.get('status')}")
    h.drop_session(session)
    if count < n:
        raise RuntimeError(f"expected at least {n} events through the queue, got {count}")
    return (count - 1) / (last - first), count


def direct_rate(h: Harness, n: int) -> tuple[float, int]:
    run = parse_run(procs.cli_argv(procs.FAKE_CLI), h.cli_env(), h.workdir, _prompt(n))
    if run.events < n:
        raise RuntimeError(f"expected at least {n} events from the direct run, got {run.events}")
    return run.rate, run.events


def _disconnects(client: redis.Redis) -> int:
    stats = client.info("stats")
    return int(stats.get("client_output_buffer_limit_disconnections", 0))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class CpuSplit:
    """CPU seconds per trial, summed over trials, by who spent them."""

    redis: float = 0.0
    worker_tree: float = 0.0  # work horse + the CLI it ran (reaped children of the worker)
    subscriber: float = 0.0
    direct_cli: float = 0.0
    direct_reader: float = 0.0

    def per_trial(self, trials: int) -> dict[str, float]:
        return {k: round(getattr(self, k) / trials, 2) for k in self.__slots__}


def run(h: Harness) -> list[Row]:
    n, trials = (5_000, 2) if h.quick else (50_000, 5)
    workers = h.workers(QUEUE)
    queue_rate(h, workers, 500)  # warm-up
    direct_rate(h, 500)
    queue: list[float] = []
    direct: list[float] = []
    events = 0
    reconnects_before = h.logs.counts["stream_reconnect"]
    disconnects_before = _disconnects(h.redis)
    cpu = CpuSplit()
    worker_pid = next(iter(workers.pids().values()))
    for _ in range(trials):
        cli0, reader0 = _children_cpu(), time.process_time()
        direct.append(direct_rate(h, n)[0])
        cpu.direct_cli += _children_cpu() - cli0
        cpu.direct_reader += time.process_time() - reader0
        h.await_idle(workers)
        redis0, tree0 = h.redis_cpu_s(), procs.descendants_cpu_s(worker_pid)
        sub0 = time.process_time()
        rate, count = queue_rate(h, workers, n)
        cpu.subscriber += time.process_time() - sub0
        h.await_idle(workers)  # the run is over: its horse's CPU (and its CLI's) is counted
        cpu.redis += h.redis_cpu_s() - redis0
        cpu.worker_tree += procs.descendants_cpu_s(worker_pid) - tree0
        queue.append(rate)
        events += count
    reconnects = h.logs.counts["stream_reconnect"] - reconnects_before
    disconnects = _disconnects(h.redis) - disconnects_before
    q, d = median(queue), median(direct)
    split = cpu.per_trial(trials)
    note = (
        f"{n} lines/trial; CPU s per run: redis {split['redis']}, worker horse+CLI "
        f"{split['worker_tree']} (the CLI alone ~{split['direct_cli']}), subscriber "
        f"{split['subscriber']}; direct reader {split['direct_reader']}; subscriber "
        f"reconnects {reconnects}, Redis output-buffer disconnects {disconnects}"
    )
    return [
        Row(
            name="throughput",
            unit="ev/s",
            n=events,
            median=q,
            p99=None,
            trial_min=min(queue),
            trial_max=max(queue),
            baseline=d,
            baseline_name="subprocess + 1 MiB reads + parse_line, in-process",
            target=f">= {TARGET_RATIO}x direct",
            met=d > 0 and q / d >= TARGET_RATIO,
            note=note,
            detail={"queue_rates": queue, "direct_rates": direct, "cpu_s_per_run": split},
            samples=queue,
            baseline_samples=direct,
        )
    ]
