"""6. Scale on one host: many short runs across a pool of 4 worker processes.

100 runs (quick: 20) of `FAKE: many n=200 rate=0` are submitted at once through
`AsyncClient` and every run is followed by its own stream, all in one event
loop. Reported: jobs/s (first submit -> last `finished`), event latency under
load (the `t=` stamps), and RSS of each idle worker process (+ its children).

Why 4 workers: the host has 2 cores. A worker runs one CLI at a time and a real
CLI mostly waits on the model, so one worker per core leaves cores idle; two
per core keeps both busy through the CPU-heavy moments (CLI start-up, parsing
and publishing a burst) while leaving room for Redis and the subscribers. The
baseline runs the same number of CLIs directly, 4 at a time, in a thread pool
(read + parse_line in-process), so both sides have the same parallelism.
"""

from __future__ import annotations

import asyncio
import resource
import time
from concurrent.futures import ThreadPoolExecutor

from bench import procs
from bench.direct import first_text, latency_ms, parse_run
from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.stats import Row, median, percentile, trials_row
from producer import AsyncClient
from shared.settings import Settings

QUEUE = "cqbench-pool"
WORKERS = 4
EVENTS = 200
PROMPT = f"FAKE: many n={EVENTS} rate=0"
TARGET_RSS_MB = 45.0
TARGET_JOBS_RATIO = 0.8  # jobs/s against the direct runs
TARGET_P99_RATIO = 3.0  # event latency p99 against the direct runs' p99


async def _follow_all(settings: Settings, sessions: list[str], cwd: str) -> list[float]:
    latencies: list[float] = []
    async with AsyncClient(settings) as client:

        async def one(session: str) -> str:
            handle = await client.submit(session_id=session, prompt=PROMPT, cwd=cwd)
            status = ""
            async for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
                now = time.monotonic_ns()
                if envelope.type == "message":
                    value = latency_ms(first_text(envelope.data.get("content")), now)
                    if value is not None:
                        latencies.append(value)
                elif envelope.type == "finished":
                    status = str(envelope.data.get("status"))
            return status

        statuses = await asyncio.gather(*(one(s) for s in sessions))
    failed = [s for s in statuses if s != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(sessions)} runs did not succeed: {failed[:3]}")
    return latencies


def queue_trial(h: Harness, workers: Workers, jobs: int) -> tuple[float, list[float]]:
    """(jobs/s, event latencies in ms) for `jobs` concurrent runs through the pool."""
    sessions = [h.session(f"scale{i}") for i in range(jobs)]
    t0 = time.perf_counter()
    latencies = asyncio.run(_follow_all(workers.settings, sessions, str(h.workdir)))
    elapsed = time.perf_counter() - t0
    for session in sessions:
        h.drop_session(session)
    if len(latencies) != jobs * EVENTS:
        raise RuntimeError(f"expected {jobs * EVENTS} stamped events, got {len(latencies)}")
    return jobs / elapsed, latencies


def direct_trial(h: Harness, jobs: int) -> tuple[float, list[float]]:
    argv, env = procs.cli_argv(procs.FAKE_CLI), h.cli_env()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        runs = list(pool.map(lambda _: parse_run(argv, env, h.workdir, PROMPT), range(jobs)))
    elapsed = time.perf_counter() - t0
    return jobs / elapsed, [v for r in runs for v in r.latencies_ms]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_rss(pid: int) -> float:
    return procs.rss_mb(pid) + sum(procs.rss_mb(c) for c in procs.children(pid))


def _tree_pss(pid: int) -> float:
    return procs.pss_mb(pid) + sum(procs.pss_mb(c) for c in procs.children(pid))


def run(h: Harness) -> list[Row]:
    jobs, trials = (20, 1) if h.quick else (100, 3)
    workers = h.workers(QUEUE, processes=WORKERS)
    noop, _ = h.noop_worker()
    queue_trial(h, workers, WORKERS)  # warm-up: one run per worker
    direct_trial(h, WORKERS)
    q_rates: list[float] = []
    d_rates: list[float] = []
    q_lat: list[list[float]] = []
    d_lat: list[list[float]] = []
    pids = list(workers.pids().values())
    cpu = {"redis": 0.0, "workers": 0.0, "members": 0.0, "subscriber": 0.0}
    cpu |= {"direct_clis": 0.0, "direct": 0.0}
    for _ in range(trials):
        h.await_idle(workers)
        children0, self0 = _children_cpu(), time.process_time()
        rate, latencies = direct_trial(h, jobs)
        cpu["direct_clis"] += _children_cpu() - children0
        cpu["direct"] += time.process_time() - self0
        d_rates.append(rate)
        d_lat.append(latencies)
        h.await_idle(workers)
        redis0, self0 = h.redis_cpu_s(), time.process_time()
        workers0 = sum(procs.descendants_cpu_s(p) for p in pids)
        members0 = sum(procs.own_cpu_s(p) for p in pids)
        rate, latencies = queue_trial(h, workers, jobs)
        cpu["subscriber"] += time.process_time() - self0
        h.await_idle(workers)  # every run over: its horse's CPU and its CLI's are counted
        cpu["redis"] += h.redis_cpu_s() - redis0
        cpu["workers"] += sum(procs.descendants_cpu_s(p) for p in pids) - workers0
        cpu["members"] += sum(procs.own_cpu_s(p) for p in pids) - members0
        q_rates.append(rate)
        q_lat.append(latencies)
    per_job = {k: round(1e3 * v / (jobs * trials), 1) for k, v in cpu.items()}
    rss = {name: _tree_rss(pid) for name, pid in workers.pids().items() if pid}
    # Reported beside it: VmRSS counts pages a worker shares with its children (its
    # scheduler, its spare horse) once in each; PSS splits them.
    pss = {name: round(_tree_pss(pid), 1) for name, pid in workers.pids().items() if pid}
    bare = procs.rss_mb(noop.pid)
    supervisor = procs.rss_mb(workers.process.pid)
    label = f"{jobs} runs x {EVENTS} events, {WORKERS} workers"
    rows = [
        trials_row(
            "scale: jobs/s",
            "jobs/s",
            [[r] for r in q_rates],
            baseline=median(d_rates),
            baseline_name=f"{jobs} direct CLI runs, {WORKERS} at a time, thread pool",
            target=f">= {TARGET_JOBS_RATIO:g}x direct",
            met=median(q_rates) >= TARGET_JOBS_RATIO * median(d_rates),
            baseline_samples=d_rates,
            note=f"{label}; CPU ms per run: workers (horses + CLIs) {per_job['workers']}, "
            f"the worker processes themselves {per_job['members']}, redis {per_job['redis']}, "
            f"subscriber {per_job['subscriber']}; direct: CLIs "
            f"{per_job['direct_clis']}, readers {per_job['direct']}",
        ),
        trials_row(
            "scale: event latency under load",
            "ms",
            q_lat,
            baseline=median([v for t in d_lat for v in t]),
            baseline_name="the direct runs' write->read latency (same load)",
            target=f"p99 <= {TARGET_P99_RATIO:g}x direct p99",
            met=percentile([v for t in q_lat for v in t], 99)
            <= TARGET_P99_RATIO * percentile([v for t in d_lat for v in t], 99),
            note=f"baseline p99 {percentile([v for t in d_lat for v in t], 99):.2f} ms",
            baseline_samples=[v for t in d_lat for v in t],
        ),
    ]
    rows[0].n = jobs * trials
    values = sorted(rss.values())
    rows.append(
        Row(
            name="scale: idle worker RSS",
            unit="MB",
            n=len(values),
            median=median(values),
            p99=max(values, default=float("nan")),
            trial_min=min(values, default=float("nan")),
            trial_max=max(values, default=float("nan")),
            baseline=bare,
            baseline_name="an idle bare `rq worker` process",
            target=f"<= {TARGET_RSS_MB:g} MB each",
            met=bool(values) and max(values) <= TARGET_RSS_MB,
            note=f"p99 = max over the {len(values)} members (+children); "
            f"pool supervisor {supervisor:.1f} MB; PSS per member (+children) "
            f"{min(pss.values(), default=0):.1f}-{max(pss.values(), default=0):.1f} MB",
            detail={"per_worker_mb": rss, "per_worker_pss_mb": pss},
        )
    )
    return rows
