"""5. Replay: a late subscriber reads a whole 10,000-event session log.

One run of `FAKE: many n=10000 rate=0` fills the log first. Then
`client.history(session)` (every envelope, parsed and validated) is timed.
Baseline: one raw `XRANGE <log key> - +` with redis-py on the same key. The
key name, `cqbench:{<session_id>}:log`, is the documented log key layout
(README / shared/keys.py); only the baseline reads Redis raw.
"""

from __future__ import annotations

import time

from bench.harness import RUN_TIMEOUT_S, Harness
from bench.stats import MS, Row, median, percentile, trials_row

QUEUE = "cqbench"
TARGET_MS = 50.0
TARGET_RATIO = 2.0  # times one raw XRANGE of the same log


def run(h: Harness) -> list[Row]:
    n, trials = (2_000, 5) if h.quick else (10_000, 20)
    workers = h.workers(QUEUE)
    session = h.session("replay")
    handle = workers.client.submit(
        session_id=session, prompt=f"FAKE: many n={n} rate=0", cwd=str(h.workdir)
    )
    finished = handle.wait(timeout_s=RUN_TIMEOUT_S)
    if finished.status != "succeeded":
        raise RuntimeError(f"the run that fills the log ended {finished.status}")
    key = h.log_key(session)
    logged = int(h.redis.xlen(key))
    if logged < n:
        raise RuntimeError(f"the session log has {logged} entries, expected >= {n}")
    client = workers.client
    queue: list[float] = []
    raw: list[float] = []
    for i in range(trials + 1):  # the first round is the warm-up
        t0 = time.perf_counter()
        events = client.history(session)
        t1 = time.perf_counter()
        entries = h.redis.xrange(key, "-", "+") or []
        t2 = time.perf_counter()
        if len(events) != logged or len(entries) != logged:
            raise RuntimeError(f"replayed {len(events)} / raw {len(entries)} of {logged}")
        if i:
            queue.append((t1 - t0) * MS)
            raw.append((t2 - t1) * MS)
    h.drop_session(session)
    p50 = median(queue)
    row = trials_row(
        f"replay: history() of {logged} events",
        "ms",
        [[v] for v in queue],
        baseline=median(raw),
        baseline_name="raw XRANGE of the log key, redis-py, one call",
        target=f"<= {TARGET_MS:g} ms and <= {TARGET_RATIO:g}x XRANGE",
        met=p50 <= TARGET_MS and p50 <= TARGET_RATIO * median(raw),
        baseline_samples=raw,
        note=f"{trials} reads; {logged / p50 * MS:,.0f} events/s",
    )
    row.detail = {"baseline_p99": percentile(raw, 99)}
    return [row]
