"""8. Interactive runs: the approval round trip, and soft cancel -> `finished`.

Round trip: `FAKE: ask tool=Bash command=true n=K` under the `ask` profile (the CLI
gets `--permission-prompt-tool=stdio`). The client follows the stream; when a
`permission_request` arrives (t0) it calls `Client.respond(allow=True)` at once; t1 is
the arrival of the tool_result `message` that follows the decision. Baseline, in the
same run and interleaved trial by trial: the same CLI under the `bash` profile (Bash
pre-allowed, nothing asked), timing the client-side gap between the tool_use message
and its tool_result message. Added = p50(t1 - t0) - p50(baseline gap), same for p99.

Soft cancel: `FAKE: slow` (it honours an interrupt at once); after its third line the
client calls `client.cancel(session, grace_s=10, wait=False)` and times the call ->
`finished`. Baseline: a hard cancel (grace 0) of the same scenario at the same point.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import RUN_TIMEOUT_S, Harness, Workers
from bench.stats import MS, Row, median, percentile, trials_row

QUEUE = "cqbench"
TARGET_ADDED_P50_MS = 20.0
TARGET_SOFT_P50_MS = 200.0
SOFT_GRACE_S = 10.0
SLOW_PROMPT = "FAKE: slow n=600 delay_ms=50"  # ~30 s: never ends before the cancel
CANCEL_AFTER_LINES = 3
SIGKILLED = -9


def _ask_prompt(k: int) -> str:
    return f"FAKE: ask tool=Bash command=true n={k}"


def _blocks(envelope: Any, role: str, kind: str) -> list[dict[str, Any]]:
    """The content blocks of type `kind` of a `message` event from `role`."""
    if envelope.type != "message" or envelope.data.get("role") != role:
        return []
    content = envelope.data.get("content")
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def approval_gaps(h: Harness, workers: Workers, k: int) -> list[float]:
    """ms permission_request received (respond at once) -> tool_result received, K times."""
    session = h.session("approve")
    client = workers.client
    handle = client.submit(
        session_id=session, prompt=_ask_prompt(k), profile="ask", cwd=str(h.workdir)
    )
    out: list[float] = []
    t0: float | None = None
    status = ""
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.perf_counter()
        if envelope.type == "permission_request":
            t0 = now
            answer = client.respond(session, str(envelope.data["request_id"]), allow=True)
            if not answer.delivered:
                raise RuntimeError(f"the answer was not delivered: {answer.outcome}")
        elif t0 is not None and _blocks(envelope, "user", "tool_result"):
            out.append((now - t0) * MS)
            t0 = None
        elif envelope.type == "finished":
            status = str(envelope.data.get("status"))
    h.drop_session(session)
    if len(out) != k or status != "succeeded":
        raise RuntimeError(f"expected {k} approved tool calls, got {len(out)} ({status})")
    return out


def preallowed_gaps(h: Harness, workers: Workers, k: int) -> list[float]:
    """ms tool_use message received -> tool_result message received, Bash pre-allowed."""
    session = h.session("preallowed")
    handle = workers.client.submit(
        session_id=session, prompt=_ask_prompt(k), profile="bash", cwd=str(h.workdir)
    )
    out: list[float] = []
    t0: float | None = None
    asked = False
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.perf_counter()
        if _blocks(envelope, "assistant", "tool_use"):
            t0 = now
        elif t0 is not None and _blocks(envelope, "user", "tool_result"):
            out.append((now - t0) * MS)
            t0 = None
        asked = asked or envelope.type == "permission_request"
    h.drop_session(session)
    if len(out) != k or asked:
        raise RuntimeError(f"expected {k} pre-allowed tool calls, got {len(out)} (asked: {asked})")
    return out


def cancel_to_finished(h: Harness, workers: Workers, grace_s: float) -> tuple[float, int | None]:
    """(ms cancel call -> `finished` received, the CLI's exit code) for one slow run."""
    session = h.session("softcancel")
    client = workers.client
    handle = client.submit(session_id=session, prompt=SLOW_PROMPT, cwd=str(h.workdir))
    lines = 0
    t0 = t1 = 0.0
    finished: dict[str, Any] = {}
    for envelope in handle.stream(timeout_s=RUN_TIMEOUT_S):
        now = time.perf_counter()
        if _blocks(envelope, "assistant", "text") and not t0:
            lines += 1
            if lines == CANCEL_AFTER_LINES:
                t0 = time.perf_counter()
                client.cancel(session, run_id=handle.run_id, grace_s=grace_s, wait=False)
        elif envelope.type == "finished":
            t1, finished = now, dict(envelope.data)
    h.drop_session(session)
    if not (t0 and t1) or finished.get("status") != "interrupted":
        raise RuntimeError(f"the cancelled run did not go as scripted: {finished}")
    code = finished.get("exit_code")
    return (t1 - t0) * MS, code if isinstance(code, int) else None


def _round_trip_rows(h: Harness, workers: Workers) -> list[Row]:
    k, trials = (3, 2) if h.quick else (10, 10)
    approval_gaps(h, workers, 2)  # warm-up
    preallowed_gaps(h, workers, 2)
    asked: list[list[float]] = []
    allowed: list[list[float]] = []
    for _ in range(trials):  # interleaved, so drift in machine load hits both alike
        h.await_idle(workers)
        allowed.append(preallowed_gaps(h, workers, k))
        h.await_idle(workers)
        asked.append(approval_gaps(h, workers, k))
    pooled_a = [v for t in asked for v in t]
    pooled_b = [v for t in allowed for v in t]
    a50, a99 = median(pooled_a), percentile(pooled_a, 99)
    b50, b99 = median(pooled_b), percentile(pooled_b, 99)
    raw = trials_row(
        "approvals: request->tool_result",
        "ms",
        asked,
        baseline=b50,
        baseline_name="Bash pre-allowed (`bash` profile): tool_use->tool_result at the client",
        note=f"respond(allow) on receipt; baseline p99 {b99:.2f} ms",
    )
    per_trial = [median(a) - median(b) for a, b in zip(asked, allowed, strict=True)]
    added = Row(
        name="approvals: added by the round trip",
        unit="ms",
        n=len(pooled_a),
        median=a50 - b50,
        p99=a99 - b99,
        trial_min=min(per_trial),
        trial_max=max(per_trial),
        baseline=b50,
        baseline_name="pre-allowed p50; ratio = asked p50 / pre-allowed p50",
        target=f"p50 <= {TARGET_ADDED_P50_MS:g} ms",
        met=a50 - b50 <= TARGET_ADDED_P50_MS,
        note=f"median = added p50, p99 = added p99; {k} tool calls/run, {trials} runs each",
        ratio=a50 / b50 if b50 > 0 else None,
        detail={"asked_p50": a50, "asked_p99": a99, "preallowed_p50": b50, "preallowed_p99": b99},
    )
    return [raw, added]


def _soft_cancel_row(h: Harness, workers: Workers) -> Row:
    trials = 3 if h.quick else 20
    soft: list[float] = []
    hard: list[float] = []
    soft_codes: list[int | None] = []
    for i in range(trials + 1):  # the first round is the warm-up
        h.await_idle(workers)
        hard_ms, _ = cancel_to_finished(h, workers, 0.0)
        h.await_idle(workers)
        soft_ms, code = cancel_to_finished(h, workers, SOFT_GRACE_S)
        if i:
            hard.append(hard_ms)
            soft.append(soft_ms)
            soft_codes.append(code)
    exited = sum(code is not None and code != SIGKILLED for code in soft_codes)
    p50 = median(soft)
    row = trials_row(
        "approvals: soft cancel->finished",
        "ms",
        [[v] for v in soft],
        baseline=median(hard),
        baseline_name="hard cancel (grace 0) of the same run, same point",
        target=f"p50 <= {TARGET_SOFT_P50_MS:g} ms",
        met=p50 <= TARGET_SOFT_P50_MS,
        note=f"grace {SOFT_GRACE_S:g} s; baseline p99 {percentile(hard, 99):.2f} ms; "
        f"CLI exited by itself in {exited}/{trials} soft runs (else killed)",
    )
    row.detail = {"baseline_p99": percentile(hard, 99), "soft_exit_codes": soft_codes}
    return row


def run(h: Harness) -> list[Row]:
    workers = h.workers(QUEUE)
    return [*_round_trip_rows(h, workers), _soft_cancel_row(h, workers)]
