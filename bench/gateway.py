"""10. Gateway: many SSE clients on one `claude-queue serve` process, and replay over SSE.

Fan-out: one gateway process (API key set, defaults otherwise) and one worker per run.
Each trial opens fresh sessions, runs a short warm-up run on each (so every stream has
a `finished` to prove it is live), then connects the SSE clients (asyncio and a lean
HTTP/1.1 reader, bench/sse_wire.py, in client processes of their own) and, in another
process, the baseline: `AsyncClient` streams on the same sessions (the Redis client
alone, what the gateway itself uses). Once every client has received its warm-up
`finished`, the measured runs (`FAKE: many rate=R size=200`) start on all sessions at
once. Each event carries the
fake CLI's `t=<monotonic_ns>`; latency = arrival at the client - that stamp (same host,
same clock). Added = SSE percentile - baseline percentile, same trials. RSS: the
gateway's VmHWM (peak) against its VmRSS once idle before the clients connect.

Replay: one httpx-sse client reads a session log of `FAKE: many n=10000 rate=0` from
`?after=0&until=finished` (request -> last event), against `Client.history()` of the
same log, interleaved (each reader goes first in turn). A reader that only counts the
frames in the raw bytes is reported beside it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from bench import procs
from bench.harness import PREFIX, RUN_TIMEOUT_S, Harness, Workers
from bench.sse_clients import (
    API_KEY,
    AUTH,
    QUEUE,
    READY_TIMEOUT_S,
    START_EVENTS,
    Follow,
    Sample,
    client_main,
)
from bench.sse_wire import FRAME_END
from bench.stats import MS, Row, median, percentile, trials_row

TARGET_ADDED_P99_MS = 50.0
TARGET_RSS_MB = 300.0
TARGET_REPLAY_MS = 150.0
WARMUP = "FAKE: many n=3 rate=0"
BASELINE_PER_SESSION = 10


@dataclass(frozen=True, slots=True)
class Plan:
    clients: int  # SSE clients in all
    runs: int  # live runs (= sessions = workers)
    events: int  # stamped events per run
    rate: int  # events/s per run
    trials: int
    client_procs: int
    replay_events: int
    replay_trials: int


QUICK = Plan(100, 2, 20, 5, 1, 1, 2_000, 3)
FULL = Plan(1000, 10, 50, 5, 3, 2, 10_000, 10)


@dataclass(slots=True)
class Gateway:
    process: Any  # subprocess.Popen[bytes]
    pid: int
    url: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_gateway(h: Harness) -> Gateway:
    """`claude-queue serve` on a free loopback port, one process, ready (`/readyz` 200)."""
    port = _free_port()
    env = procs.base_env(
        {
            "CLAUDE_QUEUE_REDIS_URL": h.redis_url,
            "CLAUDE_QUEUE_KEY_PREFIX": PREFIX,
            "CLAUDE_QUEUE_QUEUE_NAME": QUEUE,
            "CLAUDE_QUEUE_API_KEYS": json.dumps([API_KEY]),
            "CLAUDE_QUEUE_LOG_LEVEL": "warning",
            "CLAUDE_QUEUE_LOG_FORMAT": "json",
        }
    )
    argv = [sys.executable, "-m", "producer", "serve", "--port", str(port)]
    log_path = h.tmp / "gateway.log"
    process = procs.start(argv, env, log_path)
    gateway = Gateway(process, process.pid, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            break
        try:
            if httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200:
                return gateway
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    procs.stop(gateway.process)
    raise RuntimeError(f"the gateway did not get ready; see {log_path}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used itself; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- fan-out: many SSE clients on live runs -------------------------------------------------


@dataclass(slots=True)
class FanoutTrial:
    sse: list[Sample]  # write -> SSE client
    redis: list[Sample]  # write -> AsyncClient stream
    cpu: dict[str, float]  # seconds, from the measured runs' submit to the last client done
    wall_s: float
    reconnects: int
    logs: dict[str, int]


def _spawn(spec: Follow) -> tuple[Any, Connection]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=client_main, args=(child, spec), daemon=True)
    process.start()
    child.close()
    return process, parent


def _receive(conn: Connection, what: str, timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise RuntimeError(f"no {what} from a client process within {timeout_s:g} s")
    try:
        message = conn.recv()
    except EOFError:
        raise RuntimeError(f"a client process died before sending its {what}") from None
    if isinstance(message, dict) and "error" in message:
        raise RuntimeError(f"a client process failed:\n{message['error']}")
    return message


def fanout_trial(
    h: Harness, workers: Workers, gateway: Gateway, plan: Plan, *, events: int, rate: int
) -> FanoutTrial:
    sessions = tuple(h.session(f"gw{i}") for i in range(plan.runs))
    cwd = str(h.workdir)
    for handle in [workers.client.submit(session_id=s, prompt=WARMUP, cwd=cwd) for s in sessions]:
        handle.wait(timeout_s=RUN_TIMEOUT_S)
    h.await_idle(workers)
    per_proc = max(1, plan.clients // plan.runs // plan.client_procs)
    specs = [Follow("sse", sessions, per_proc, gateway.url, h.redis_url)] * plan.client_procs
    specs.append(Follow("redis", sessions, BASELINE_PER_SESSION, gateway.url, h.redis_url))
    started = [_spawn(spec) for spec in specs]
    ok = False
    try:
        for _, conn in started:
            _receive(conn, "ready", READY_TIMEOUT_S)
        gateway0, redis0, t0 = cpu_s(gateway.pid), h.redis_cpu_s(), time.monotonic()
        prompt = f"FAKE: many n={events} rate={rate} size=200"
        handles = [workers.client.submit(session_id=s, prompt=prompt, cwd=cwd) for s in sessions]
        results = [_receive(conn, "results", RUN_TIMEOUT_S) for _, conn in started]
        wall_s = time.monotonic() - t0
        cpu = {"gateway": cpu_s(gateway.pid) - gateway0, "redis": h.redis_cpu_s() - redis0}
        statuses = [handle.wait(timeout_s=RUN_TIMEOUT_S).status for handle in handles]
        ok = True
    finally:
        for process, conn in started:
            process.join(timeout=30 if ok else 0)  # after a failure: stop them at once
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
    for session in sessions:
        h.drop_session(session)
    if any(status != "succeeded" for status in statuses):
        raise RuntimeError(f"measured runs ended {statuses}")
    *sse, base = results
    cpu["sse_clients"] = sum(r["cpu_s"] for r in sse)
    cpu["baseline"] = base["cpu_s"]
    trial = FanoutTrial(
        sse=[v for r in sse for v in r["samples"]],
        redis=base["samples"],
        cpu=cpu,
        wall_s=wall_s,
        reconnects=sum(r["reconnects"] for r in sse),
        logs=dict(sum((Counter(r["logs"]) for r in results), Counter())),
    )
    expected = [
        events * plan.runs * n for n in (per_proc * plan.client_procs, BASELINE_PER_SESSION)
    ]
    if [len(trial.sse), len(trial.redis)] != expected:
        raise RuntimeError(f"stamped events (SSE, baseline): {len(trial.sse)}, {len(trial.redis)}")
    return trial


def _ms(samples: list[Sample], start: bool | None = None) -> list[float]:
    """The latencies; only a run's first START_EVENTS events (True) or the others (False)."""
    return [ms for i, ms in samples if start is None or (i < START_EVENTS) == start]


def _p99s(samples: list[Sample]) -> str:
    return " / ".join(f"{percentile(_ms(samples, start), 99):.1f}" for start in (True, False))


def fanout_rows(plan: Plan, trials: list[FanoutTrial], idle_mb: float, peak_mb: float) -> list[Row]:
    sse, base = [_ms(t.sse) for t in trials], [_ms(t.redis) for t in trials]
    every_sse = [v for t in trials for v in t.sse]
    every_base = [v for t in trials for v in t.redis]
    pooled_s, pooled_b = _ms(every_sse), _ms(every_base)
    s50, s99 = median(pooled_s), percentile(pooled_s, 99)
    b50, b99 = median(pooled_b), percentile(pooled_b, 99)
    cpu = {k: sum(t.cpu[k] for t in trials) for k in trials[0].cpu}
    wall = sum(t.wall_s for t in trials)
    load = ", ".join(f"{k} {v / wall:.0%}" for k, v in cpu.items())
    frames = len(pooled_s) * (plan.events + 6) / plan.events  # a run logs 6 more events
    what = f"{plan.clients} SSE clients on {plan.runs} runs x {plan.events} events at {plan.rate}/s"
    raw = trials_row(
        "gateway: write->SSE client",
        "ms",
        sse,
        baseline=b50,
        baseline_name=f"AsyncClient streams, {BASELINE_PER_SESSION} per session, own process, "
        "the same runs",
        note=f"{what}; baseline p99 {b99:.2f} ms; SSE p99 per trial "
        + ", ".join(f"{percentile(t, 99):.1f}" for t in sse)
        + f"; p99 of each run's first {START_EVENTS} events / of the rest: SSE "
        + f"{_p99s(every_sse)} ms, Redis client {_p99s(every_base)} ms",
    )
    per_trial = [median(s) - median(b) for s, b in zip(sse, base, strict=True)]
    added = Row(
        name="gateway: added (SSE - Redis client)",
        unit="ms",
        n=len(pooled_s),
        median=s50 - b50,
        p99=s99 - b99,
        trial_min=min(per_trial),
        trial_max=max(per_trial),
        baseline=b50,
        baseline_name="Redis client p50; ratio = SSE p50 / Redis client p50",
        target=f"p99 <= {TARGET_ADDED_P99_MS:g} ms added",
        met=s99 - b99 <= TARGET_ADDED_P99_MS,
        note=f"median = added p50, p99 = added p99; CPU over the measured runs (share of "
        f"one core): {load}; gateway ~{1e6 * cpu['gateway'] / frames:.0f} us per frame sent; "
        f"SSE reconnects {sum(t.reconnects for t in trials)}",
        ratio=s50 / b50 if b50 > 0 else None,
        detail={
            "sse_p50": s50,
            "sse_p99": s99,
            "redis_p50": b50,
            "redis_p99": b99,
            "cpu_s": cpu,
            "wall_s": wall,
            "client_logs": [t.logs for t in trials],
        },
    )
    rss = Row(
        name="gateway: RSS (peak)",
        unit="MB",
        n=1,
        median=peak_mb,
        p99=None,
        trial_min=peak_mb,
        trial_max=peak_mb,
        baseline=idle_mb,
        baseline_name="the same process, idle, before any client (VmRSS)",
        target=f"<= {TARGET_RSS_MB:g} MB",
        met=peak_mb <= TARGET_RSS_MB,
        note=f"VmHWM of the serve process after {plan.clients} clients x {len(trials)} trials",
    )
    return [raw, added, rss]


# -- replay: one client reads a long log -------------------------------------------------------


def _read_raw(http: httpx.Client, url: str) -> int:
    """Frames of a `?until=finished` stream, counted in the raw bytes after its last one."""
    chunks: list[bytes] = []
    with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        response.raise_for_status()
        chunks.extend(response.iter_raw())
    body = b"".join(chunks)
    if b"event: finished" not in body[-4096:]:
        raise RuntimeError("the replayed stream did not end with its finished event")
    return body.count(FRAME_END) - body.count(b": heartbeat" + FRAME_END)


def _read_sse(http: httpx.Client, url: str) -> int:
    with connect_sse(http, "GET", url) as source:
        source.response.raise_for_status()
        events = [sse.event for sse in source.iter_sse()]
    if events[-1:] != ["finished"]:
        raise RuntimeError("the replayed stream did not end with its finished event")
    return len(events)


def replay_rows(h: Harness, workers: Workers, gateway: Gateway, plan: Plan) -> list[Row]:
    session = h.session("gwreplay")
    prompt = f"FAKE: many n={plan.replay_events} rate=0"
    handle = workers.client.submit(session_id=session, prompt=prompt, cwd=str(h.workdir))
    if handle.wait(timeout_s=RUN_TIMEOUT_S).status != "succeeded":
        raise RuntimeError("the run that fills the log did not succeed")
    logged = int(h.redis.xlen(h.log_key(session)))
    url = f"{gateway.url}/v1/sessions/{session}/events?after=0&until=finished"
    raw: list[float] = []
    parsed: list[float] = []
    history: list[float] = []
    with httpx.Client(headers=AUTH, timeout=RUN_TIMEOUT_S) as http:
        readers: list[tuple[list[float], Callable[[], int]]] = [
            (raw, lambda: _read_raw(http, url)),
            (parsed, lambda: _read_sse(http, url)),
            (history, lambda: len(workers.client.history(session))),
        ]
        for i in range(plan.replay_trials + 1):  # the first round is the warm-up
            for times, read in readers[i % 3 :] + readers[: i % 3]:  # each goes first in turn
                t0 = time.perf_counter()
                count = read()
                elapsed = time.perf_counter() - t0
                if count != logged:
                    raise RuntimeError(f"replayed {count} of {logged} events")
                if i:
                    times.append(elapsed * MS)
    h.drop_session(session)
    base = median(history)
    rows = [
        trials_row(
            f"gateway: SSE replay of {logged} events",
            "ms",
            [[v] for v in parsed],
            baseline=base,
            baseline_name="Client.history() of the same log",
            target=f"<= {TARGET_REPLAY_MS:g} ms",
            met=median(parsed) <= TARGET_REPLAY_MS,
            note=f"request -> last event, one httpx-sse client; {plan.replay_trials} reads; "
            f"history() p99 {percentile(history, 99):.1f} ms",
        ),
        trials_row(
            f"gateway: SSE replay of {logged} events, raw",
            "ms",
            [[v] for v in raw],
            baseline=base,
            baseline_name="Client.history() of the same log",
            note="the same stream read by a client that only counts frames in the bytes",
        ),
    ]
    return rows


def run(h: Harness) -> list[Row]:
    plan = QUICK if h.quick else FULL
    workers = h.workers(QUEUE, processes=plan.runs)
    gateway = start_gateway(h)
    try:
        idle_mb = procs.rss_mb(gateway.pid)
        warmup = Plan(plan.runs, plan.runs, 10, 0, 1, 1, 0, 0)  # one client per session
        fanout_trial(h, workers, gateway, warmup, events=10, rate=0)
        trials = [
            fanout_trial(h, workers, gateway, plan, events=plan.events, rate=plan.rate)
            for _ in range(plan.trials)
        ]
        peak_mb = peak_rss_mb(gateway.pid)
        status = httpx.get(f"{gateway.url}/v1/status", headers=AUTH, timeout=30)
        dropped = status.raise_for_status().json()["gateway"]["sse_clients_dropped"]
        rows = fanout_rows(plan, trials, idle_mb, peak_mb)
        rows[1].note += f"; clients dropped by the gateway {dropped}"
        return rows + replay_rows(h, workers, gateway, plan)
    finally:
        procs.stop(gateway.process)
