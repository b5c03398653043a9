"""A quick look at one idle worker's memory: `python -m bench.rss_probe`.

Starts `python -m producer worker --name rss-probe` (fork mode, the scheduler on,
as a user would), optionally runs a few `FAKE:` jobs through it (the scale bench
measures its workers after they ran jobs), waits until it is idle and prints:
VmRSS of the worker and of each child (RQ's scheduler process is a forked child),
their sum (what the scale bench reports as "+children"), the PSS of each (shared
pages split between the processes that map them), and the number of modules the
worker imported (from a second run under `-X importtime`, counted once idle).
Then it stops the worker (SIGTERM twice) and flushes its Redis db.

No figure here is asserted: it is a measuring tool, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench import procs
from producer import Client
from shared.settings import Settings

NAME = "rss-probe"
QUEUE = "rss-probe"
PREFIX = "cqrss"


def _smaps(pid: int) -> dict[str, float]:
    """Rss, Pss, shared and private (MiB) from /proc/<pid>/smaps_rollup."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[-1] == "kB":
                fields[key] = int(parts[0]) / 1024
    return {
        "rss": fields.get("Rss", 0.0),
        "pss": fields.get("Pss", 0.0),
        "shared": fields.get("Shared_Clean", 0.0) + fields.get("Shared_Dirty", 0.0),
        "private": fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0),
    }


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    return "?"


def _await_idle(client: Client, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the worker exited early")
        for info in client.status().workers:
            if info.name == NAME and info.state == "idle" and info.pid is not None:
                return info.pid
        time.sleep(0.05)
    raise RuntimeError("the worker did not become idle")


def probe(redis_url: str, *, jobs: int, importtime: bool, settle_s: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="cqrss-"))
    env = procs.base_env(
        {
            "CLAUDE_QUEUE_REDIS_URL": redis_url,
            "CLAUDE_QUEUE_KEY_PREFIX": PREFIX,
            "CLAUDE_QUEUE_QUEUE_NAME": QUEUE,
            "CLAUDE_QUEUE_CLAUDE_BIN": str(procs.FAKE_CLI),
            "CLAUDE_QUEUE_EXTRA_ENV": json.dumps({"HOME": str(tmp)}),
            "CLAUDE_QUEUE_LOG_LEVEL": "warning",
            "CLAUDE_QUEUE_LOG_FORMAT": "json",
        }
    )
    flags = ["-X", "importtime"] if importtime else []
    argv = [sys.executable, *flags, "-m", "producer", "worker", "--name", NAME]
    log_path = tmp / "worker.log"
    settings = Settings(
        redis_url=redis_url,
        key_prefix=PREFIX,
        queue_name=QUEUE,
        claude_bin=str(procs.FAKE_CLI),
        log_level="warning",
    )
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()  # the probe's own db only
    proc = procs.start(argv, env, log_path)
    client = Client(settings)
    try:
        _await_idle(client, proc, 60.0)
        for i in range(jobs):
            handle = client.submit(
                session_id=f"rss-{i}", prompt="FAKE: many n=50 rate=0", cwd=str(tmp)
            )
            for _ in handle.stream(timeout_s=60):
                pass
        pid = _await_idle(client, proc, 60.0)
        time.sleep(settle_s)  # let the scheduler child and threads settle
        result: dict[str, object] = {"pid": pid}
        if importtime:
            lines = log_path.read_text(errors="replace").splitlines()
            result["modules"] = sum(1 for x in lines if x.startswith("import time:")) - 1
            return result
        members = [pid, *procs.children(pid)]
        per = {m: _smaps(m) for m in members}
        result["processes"] = {f"{m} {_cmdline(m)}": per[m] for m in members}
        result["vmrss_total_mb"] = round(sum(procs.rss_mb(m) for m in members), 1)
        result["pss_total_mb"] = round(sum(p["pss"] for p in per.values()), 1)
        return result
    finally:
        client.close()
        procs.stop(proc)
        conn.flushdb()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--jobs", type=int, default=0, help="FAKE runs first (their warm CLIs stay, as children)"
    )
    parser.add_argument("--settle-s", type=float, default=1.0)
    args = parser.parse_args()
    rss = probe(args.redis_url, jobs=args.jobs, importtime=False, settle_s=args.settle_s)
    mods = probe(args.redis_url, jobs=args.jobs, importtime=True, settle_s=args.settle_s)
    print(json.dumps({**rss, "modules_imported": mods["modules"]}, indent=2))


if __name__ == "__main__":
    main()
