"""The bench's world: its Redis db, settings, and the real worker processes it starts.

Workers are started exactly like a user would (`python -m producer worker`, or
`--processes N` for a pool) and are always stopped again by `Harness.close()`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import MutableMapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import structlog

from bench import procs
from producer import Client
from shared.settings import Settings

DEFAULT_URL = "redis://127.0.0.1:6379/14"
PREFIX = "cqbench"
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 300.0
BENCH_RUN_LOG_BYTES = 1 << 30  # per-run log budget of bench workers (see workers())


class LogCounter:
    """A structlog processor that counts the client's log events and drops them.

    The client logs only unusual things (e.g. `stream_reconnect`); the bench
    reports the counts instead of letting them interleave with its table.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, str] = {}  # the first occurrence of each, for the report

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        name = str(event.get("event"))
        self.counts[name] += 1
        if name not in self.samples:
            self.samples[name] = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
        raise structlog.DropEvent


@dataclass(slots=True)
class Workers:
    """A started worker (or pool) and a client for its queue."""

    names: list[str]
    process: Any  # subprocess.Popen[bytes]
    settings: Settings
    client: Client
    log_path: Path

    def pids(self) -> dict[str, int]:
        """Worker name -> pid, as the workers registered themselves in Redis."""
        return {w.name: w.pid for w in self.client.status().workers if w.pid is not None}


class Harness:
    """Owns every process and connection the bench opens; `close()` ends them all."""

    def __init__(self, *, quick: bool, redis_url: str = DEFAULT_URL, mode: str = "fork") -> None:
        self.quick = quick
        self.mode = mode  # `claude-queue worker --mode`: fork (RQ's default) or simple
        self.redis_url = redis_url
        self.logs = LogCounter()
        structlog.configure(processors=[self.logs])
        self._stack = ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix="cqbench-"))
        self.home = self.tmp / "home"
        self.workdir = self.tmp / "work"
        self.home.mkdir()
        self.workdir.mkdir()
        self.redis = redis.Redis.from_url(redis_url)
        self.redis.ping()
        self.redis.flushdb()  # our dedicated db only, never FLUSHALL
        self._workers: dict[str, Workers] = {}
        self._noop: Any = None

    # -- names and settings ---------------------------------------------------

    @staticmethod
    def session(label: str) -> str:
        return f"bench-{label}-{uuid.uuid4().hex[:12]}"

    def settings(self, queue: str, claude_bin: str | Path = procs.FAKE_CLI) -> Settings:
        return Settings(
            redis_url=self.redis_url,
            key_prefix=PREFIX,
            queue_name=queue,
            claude_bin=str(claude_bin),
            log_level="warning",
        )

    def log_key(self, session_id: str) -> str:
        """The session log's Redis key, as README/shared.keys documents it (baselines only)."""
        return f"{PREFIX}:{{{session_id}}}:log"

    def drop_session(self, session_id: str) -> None:
        """Delete a finished session's keys, so big logs do not pile up in Redis."""
        keys = list(self.redis.scan_iter(match=f"{PREFIX}:{{{session_id}}}:*", count=1000))
        if keys:
            self.redis.delete(*keys)

    def redis_cpu_s(self) -> float:
        """CPU seconds the Redis server has used (server-wide: other users count too)."""
        cpu = self.redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def cli_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of a directly run CLI: what a worker's CLI also gets."""
        return procs.base_env({"HOME": str(self.home), **(extra or {})})

    # -- workers ---------------------------------------------------------------

    def workers(
        self,
        queue: str,
        *,
        processes: int = 1,
        claude_bin: str | Path = procs.FAKE_CLI,
        extra_env: dict[str, str] | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> Workers:
        """Worker process(es) on `queue`, started once, ready and warmed up. `extra_env`
        goes to their CLIs, `worker_env` to the worker processes themselves."""
        if queue in self._workers:
            return self._workers[queue]
        settings = self.settings(queue, claude_bin)
        cli_extra = {"HOME": str(self.home), **(extra_env or {})}
        env = procs.base_env(
            {
                "CLAUDE_QUEUE_REDIS_URL": self.redis_url,
                "CLAUDE_QUEUE_KEY_PREFIX": PREFIX,
                "CLAUDE_QUEUE_QUEUE_NAME": queue,
                "CLAUDE_QUEUE_CLAUDE_BIN": str(claude_bin),
                "CLAUDE_QUEUE_EXTRA_ENV": json.dumps(cli_extra),
                "CLAUDE_QUEUE_LOG_LEVEL": "warning",
                "CLAUDE_QUEUE_LOG_FORMAT": "json",
                # The throughput run (50,000 mixed events, ~120 MB) is past the default
                # per-run log budget (64 MiB), which would stop it; benches measure speed.
                "CLAUDE_QUEUE_MAX_RUN_LOG_BYTES": str(BENCH_RUN_LOG_BYTES),
                **(worker_env or {}),
            }
        )
        base = f"{queue}-w"
        argv = [sys.executable, "-m", "producer", "worker", "--name", base, "--mode", self.mode]
        names = [base]
        if processes > 1:
            argv += ["--processes", str(processes)]
            names = [f"{base}-{i}" for i in range(processes)]
        log_path = self.tmp / f"{queue}.log"
        process = procs.start(argv, env, log_path)
        self._stack.callback(procs.stop, process)
        client = Client(settings)
        self._stack.callback(client.close)
        workers = Workers(names, process, settings, client, log_path)
        self._await_ready(workers)
        self._workers[queue] = workers
        return workers

    def _await_ready(self, workers: Workers) -> None:
        if not self.await_idle(workers, READY_TIMEOUT_S):
            raise RuntimeError(f"workers {workers.names} not ready; see {workers.log_path}")

    def await_idle(self, workers: Workers, timeout_s: float = 30.0) -> bool:
        """Wait until every worker is registered and idle (between jobs: horse gone)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if workers.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {workers.log_path}")
            states = {w.name: w.state for w in workers.client.status().workers}
            if all(states.get(n) == "idle" for n in workers.names):
                return True
            time.sleep(0.02)
        return False

    def noop_worker(self) -> tuple[Any, str]:
        """A bare `rq worker` (fork per job, JSON serializer) on its own queue."""
        queue = f"{PREFIX}-noop"
        if self._noop is None:
            argv = [
                str(procs.VENV_BIN / "rq"),
                "worker",
                "--url",
                self.redis_url,
                "--serializer",
                "json",
                "--path",
                str(procs.REPO),
                "--name",
                f"{queue}-w",
                "--logging_level",
                "WARNING",
                queue,
            ]
            env = procs.base_env()
            self._noop = procs.start(argv, env, self.tmp / "noop.log")
            self._stack.callback(procs.stop, self._noop)
            self._await_noop_ready(queue)
        return self._noop, queue

    def _await_noop_ready(self, queue: str) -> None:
        from rq import Queue, Worker

        q = Queue(queue, connection=self.redis)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(w.name == f"{queue}-w" for w in Worker.all(queue=q)):
                return
            if self._noop.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"bare rq worker not ready; see {self.tmp / 'noop.log'}")

    def close(self, *, keep_files: bool = False) -> None:
        """Stop every process, flush the bench db; keep the logs only if asked."""
        try:
            self._stack.close()
        finally:
            try:
                self.redis.flushdb()
                self.redis.close()
            finally:
                if not keep_files:
                    shutil.rmtree(self.tmp, ignore_errors=True)
