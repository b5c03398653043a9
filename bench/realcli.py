"""7. Real CLI overhead: one real `claude` run, directly vs through the queue.

The pinned CLI (devtools/claude-cli) talks to the local fake model API
(`devtools.fake_anthropic.FakeAnthropic`, one short text answer per run).
Direct: the CLI as a subprocess with the prompt on stdin, wall time to exit.
Queue: `Client.submit()` -> `finished` received, on a worker whose CLI gets the
same environment through CLAUDE_QUEUE_EXTRA_ENV. Runs alternate direct/queue.
"""

from __future__ import annotations

import subprocess
import time

from bench import procs
from bench.harness import RUN_TIMEOUT_S, Harness
from bench.stats import MS, Row, median, percentile, skipped_row, trials_row
from devtools.fake_anthropic import FakeAnthropic, TextTurn

QUEUE = "cqbench-real"
PROMPT = "Say hello in five words."
ANSWER = "Hello from the fake model."
TARGET_RATIO = 1.05


def _direct(h: Harness, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        procs.cli_argv(procs.REAL_CLI),
        input=procs.prompt_line(PROMPT),
        capture_output=True,
        env=env,
        cwd=h.workdir,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0 or ANSWER.encode() not in done.stdout:
        raise RuntimeError(
            f"direct real CLI run failed ({done.returncode}): {done.stderr[-500:]!r}"
        )
    return elapsed * MS


def run(h: Harness) -> list[Row]:
    name = "real CLI: wall time"
    if not procs.REAL_CLI.exists():
        return [skipped_row(name, f"{procs.REAL_CLI} is not installed (make install)")]
    trials = 2 if h.quick else 10
    script = [TextTurn(ANSWER) for _ in range(2 * (trials + 1))]
    with FakeAnthropic(script, default_text=ANSWER) as api:
        cli_env = {
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "sk-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        workers = h.workers(QUEUE, claude_bin=procs.REAL_CLI, extra_env=cli_env)
        direct_env = h.cli_env(cli_env)
        direct: list[float] = []
        queue: list[float] = []
        for i in range(trials + 1):  # the first round is the warm-up
            d = _direct(h, direct_env)
            h.await_idle(workers)
            session = h.session("realcli")
            t0 = time.perf_counter()
            handle = workers.client.submit(session_id=session, prompt=PROMPT, cwd=str(h.workdir))
            finished = handle.wait(timeout_s=RUN_TIMEOUT_S)
            q = (time.perf_counter() - t0) * MS
            h.drop_session(session)
            if finished.status != "succeeded":
                raise RuntimeError(f"queued real CLI run ended {finished.status}: {finished}")
            if i:
                direct.append(d)
                queue.append(q)
    row = trials_row(
        name,
        "ms",
        [[v] for v in queue],
        baseline=median(direct),
        baseline_name="the same CLI run as a local subprocess, spawn -> exit",
        target=f"<= {TARGET_RATIO}x direct",
        met=median(queue) <= TARGET_RATIO * median(direct),
        note=f"{trials} runs each, alternating; queue = submit -> `finished` received",
    )
    row.detail = {"baseline_p99": percentile(direct, 99), "direct_ms": direct, "queue_ms": queue}
    return [row]
