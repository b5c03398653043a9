"""3. Dispatch latency: submit -> first events at the client, with an idle worker.

Measured: `Client.submit()` call -> `started` received by the run's stream (the
worker spawned the CLI), and -> `init` (the CLI's first line). Baseline: a bare
RQ job (`bench.noop.noop`) on a plain `rq worker` (fork per job, JSON
serializer, its own queue): enqueue -> the PUBLISH the job makes is received.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rq import Queue, Worker
from rq.serializers import JSONSerializer

from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.stats import MS, Row, median, percentile, trials_row

QUEUE = "cqbench"
TARGET_RATIO = 1.5
_SETTLE_S = 0.05


def queue_dispatch(h: Harness, workers: Workers) -> tuple[float, float]:
    """(ms to `started`, ms to `init`) for one `FAKE: text` run."""
    session = h.session("dispatch")
    t0 = time.perf_counter()
    handle = workers.client.submit(session_id=session, prompt="FAKE: text", cwd=str(h.workdir))
    started = init = 0.0
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.perf_counter()
        if envelope.type == "started":
            started = now
        elif envelope.type == "init":
            init = now
    h.drop_session(session)
    if not (started and init):
        raise RuntimeError("the run ended without `started` and `init` events")
    return (started - t0) * MS, (init - t0) * MS


def noop_dispatch(h: Harness, queue: Queue) -> float:
    """ms from enqueue to the bare job's completion signal."""
    channel = f"cqbench-noop-done-{uuid.uuid4().hex[:8]}"
    pubsub = h.redis.pubsub()
    try:
        _subscribe(pubsub, channel)
        t0 = time.perf_counter()
        queue.enqueue("bench.noop.noop", channel, result_ttl=60)
        deadline = t0 + 30.0
        while time.perf_counter() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                return (time.perf_counter() - t0) * MS
        raise RuntimeError("the bare RQ job never signalled completion")
    finally:
        pubsub.close()


def _subscribe(pubsub: Any, channel: str) -> None:
    """Subscribe and wait for Redis to confirm, so the signal cannot be missed."""
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message.get("type") == "subscribe":
            return
    raise RuntimeError("Redis did not confirm the subscription")


def _await_noop_idle(queue: Queue) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        workers = Worker.all(queue=queue)
        if workers and all(w.get_state() == "idle" for w in workers) and queue.count == 0:
            return
        time.sleep(0.01)


def run(h: Harness) -> list[Row]:
    trials = 8 if h.quick else 50
    workers = h.workers(QUEUE)
    _, noop_name = h.noop_worker()
    noop_queue = Queue(noop_name, connection=h.redis, serializer=JSONSerializer)
    started: list[float] = []
    init: list[float] = []
    bare: list[float] = []
    for i in range(trials + 1):  # the first round is the warm-up
        _await_noop_idle(noop_queue)
        time.sleep(_SETTLE_S)
        b = noop_dispatch(h, noop_queue)
        h.await_idle(workers)
        time.sleep(_SETTLE_S)
        s, t = queue_dispatch(h, workers)
        if i:
            bare.append(b)
            started.append(s)
            init.append(t)
    base = median(bare)
    name = "bare RQ no-op job, enqueue -> its PUBLISH received"
    started_row = trials_row(
        "dispatch: submit->started",
        "ms",
        [[v] for v in started],
        baseline=base,
        baseline_name=name,
        target=f"<= {TARGET_RATIO}x bare job",
        met=median(started) <= TARGET_RATIO * base,
        note=f"{trials} runs of `FAKE: text`, idle worker, one at a time",
    )
    init_row = trials_row(
        "dispatch: submit->init",
        "ms",
        [[v] for v in init],
        baseline=base,
        baseline_name=name,
        note="init = the CLI's first line; includes the CLI's own start-up",
    )
    for row in (started_row, init_row):
        row.detail = {"baseline_p99": percentile(bare, 99), "baseline_samples": bare}
    return [started_row, init_row]
