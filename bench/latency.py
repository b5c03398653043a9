"""1. Per-event added latency: CLI write -> client receive, minus the direct read.

The fake CLI writes ~1,000 events/s, each text starting `t=<time.monotonic_ns()>`
taken just before the write. The subscriber (sync `Client.stream`, same host, so
the same monotonic clock) subtracts that from its own clock on receipt. The
baseline runs the same CLI as a subprocess read by an asyncio reader (readline +
json.loads). Added latency = queue percentile - baseline percentile.
"""

from __future__ import annotations

import time

from bench import procs
from bench.direct import asyncio_latencies, first_text, latency_ms
from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.stats import Row, median, percentile, trials_row

QUEUE = "cqbench"
TARGET_P50_MS = 0.25
TARGET_P99_MS = 1.0


def scenario_prompt(n: int) -> str:
    return f"FAKE: many n={n} rate=1000 size=200"


def queue_latencies(h: Harness, workers: Workers, n: int) -> list[float]:
    session = h.session("latency")
    handle = workers.client.submit(
        session_id=session, prompt=scenario_prompt(n), cwd=str(h.workdir)
    )
    out: list[float] = []
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.monotonic_ns()
        if envelope.type == "message":
            value = latency_ms(first_text(envelope.data.get("content")), now)
            if value is not None:
                out.append(value)
    h.drop_session(session)
    if len(out) != n:
        raise RuntimeError(f"expected {n} stamped events through the queue, got {len(out)}")
    return out


def direct_latencies(h: Harness, n: int) -> list[float]:
    out = asyncio_latencies(
        procs.cli_argv(procs.FAKE_CLI), h.cli_env(), h.workdir, scenario_prompt(n)
    )
    if len(out) != n:
        raise RuntimeError(f"expected {n} stamped lines from the direct run, got {len(out)}")
    return out


def run(h: Harness) -> list[Row]:
    n, trials = (300, 2) if h.quick else (3000, 5)
    workers = h.workers(QUEUE)
    queue_latencies(h, workers, 50)  # warm-up
    direct_latencies(h, 50)
    queue: list[list[float]] = []
    direct: list[list[float]] = []
    for _ in range(trials):  # interleaved, so drift in machine load hits both alike
        direct.append(direct_latencies(h, n))
        h.await_idle(workers)
        queue.append(queue_latencies(h, workers, n))
    pooled_q = [v for t in queue for v in t]
    pooled_d = [v for t in direct for v in t]
    d50, d99 = median(pooled_d), percentile(pooled_d, 99)
    q50, q99 = median(pooled_q), percentile(pooled_q, 99)
    raw = trials_row(
        "latency: write->client (queue)",
        "ms",
        queue,
        baseline=d50,
        baseline_name="asyncio subprocess reader, write->read",
        baseline_samples=pooled_d,
        note=f"baseline p99 {d99:.3f} ms; queue p99 per trial "
        + ", ".join(f"{percentile(t, 99):.2f}" for t in queue),
    )
    added50, added99 = q50 - d50, q99 - d99
    per_trial = [median(q) - median(d) for q, d in zip(queue, direct, strict=True)]
    added = Row(
        name="latency: added (queue - direct)",
        unit="ms",
        n=len(pooled_q),
        median=added50,
        p99=added99,
        trial_min=min(per_trial),
        trial_max=max(per_trial),
        baseline=d50,
        baseline_name="direct p50; ratio = queue p50 / direct p50",
        target=f"p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms",
        met=added50 <= TARGET_P50_MS and added99 <= TARGET_P99_MS,
        note=f"median = added p50, p99 = added p99; {n} events/trial at 1000/s",
        ratio=q50 / d50 if d50 > 0 else None,
        samples=[q - d50 for q in pooled_q],
        baseline_samples=pooled_d,
        detail={
            "queue_p50": q50,
            "queue_p99": q99,
            "direct_p50": d50,
            "direct_p99": d99,
            "queue_p99_per_trial": [round(percentile(t, 99), 3) for t in queue],
            "direct_p99_per_trial": [round(percentile(t, 99), 3) for t in direct],
        },
    )
    return [raw, added]
