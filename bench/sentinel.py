"""The cost of CLAUDE_QUEUE_REDIS_MIN_REPLICAS=1: one event write, with and without WAIT.

Its own Redis master and one replica (loopback processes, no persistence) are started
for it. Two runs are claimed on the master, and a worker's Publisher for each writes its
events one at a time (one `publish()` each, as a trickling CLI causes), in
interleaved trials: one through a store with MIN_REPLICAS=0 (the baseline: EVALSHA
only), the other with MIN_REPLICAS=1 (EVALSHA + `WAIT 1` in one round trip).
Time = publish() call to return. The
sentinels themselves play no part in a write, so none are started.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from bench.harness import Harness
from bench.stats import Row, median, percentile, trials_row
from producer.submission import prepare
from shared.events import Event, EventType, TextData
from shared.jobs import PromptJob
from shared.runstore import Claimed, RunStore
from shared.settings import Settings
from worker.publisher import Publisher

SESSION = "bench-wait"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Pair:
    """A master and its replica, as redis-server processes under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary, self.workdir = binary, workdir
        self.master_port, self.replica_port = _free_port(), _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port, extra in (
            (self.master_port, []),
            (self.replica_port, ["--replicaof", "127.0.0.1", str(self.master_port)]),
        ):
            folder = self.workdir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
            argv += ["--save", "", "--appendonly", "no", "--logfile", str(folder / "log"), *extra]
            self.procs.append(subprocess.Popen(argv))
        deadline = time.monotonic() + 30
        while not self._replica_online():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not sync; logs under {self.workdir}")
            time.sleep(0.05)

    def _replica_online(self) -> bool:
        try:
            with redis.Redis(port=self.master_port, socket_connect_timeout=0.5) as master:
                replica = master.info("replication").get("slave0")
        except redis.RedisError:
            return False
        return isinstance(replica, dict) and replica.get("state") == "online"

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)


def _write_times(publisher: Publisher, n: int, offset: int) -> list[float]:
    out: list[float] = []
    for i in range(n):
        event = Event(type=EventType.TEXT, data=TextData(text=f"line {offset + i} " + "x" * 180))
        start = time.perf_counter_ns()
        publisher.publish(event)
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _claimed_publisher(
    connection: redis.Redis, settings: Settings, session: str
) -> tuple[Publisher, Callable[[], bool]]:
    """A publisher of a claimed run, and its lease renewal (a worker's lease thread
    renews every LEASE_RENEW_S; a full run of this bench outlasts one LEASE_TTL_S)."""
    store = RunStore(connection, settings)
    new_run = prepare(settings, PromptJob(session_id=session, prompt="bench"))
    store.submit(new_run)
    claimed = store.claim(session, new_run.run_id, worker="bench", host="bench")
    if not isinstance(claimed, Claimed):
        raise RuntimeError(f"the bench run could not be claimed: {claimed}")
    publisher = Publisher(
        store,
        session_id=session,
        run_id=new_run.run_id,
        token=claimed.token,
        max_event_bytes=settings.max_event_bytes,
    )
    return publisher, lambda: store.renew(session, new_run.run_id, claimed.token)


def run(h: Harness) -> list[Row]:
    n, trials = (300, 2) if h.quick else (3000, 5)
    pair = _Pair(h.tmp / "replicated")
    pair.start()
    try:
        base = h.settings("cqbench-wait").model_copy(
            update={"redis_url": f"redis://127.0.0.1:{pair.master_port}/0"}
        )
        plain = Settings.model_validate({**base.model_dump(), "redis_min_replicas": 0})
        waiting = Settings.model_validate({**base.model_dump(), "redis_min_replicas": 1})
        with redis.Redis(port=pair.master_port) as connection:
            publishers = {
                name: _claimed_publisher(connection, settings, f"{SESSION}-{name}")
                for name, settings in (("plain", plain), ("wait", waiting))
            }
            timings: dict[str, list[list[float]]] = {"plain": [], "wait": []}
            for trial in range(trials + 1):  # the first round warms up, unrecorded
                for name, (publisher, renew) in publishers.items():  # interleaved
                    if not renew():
                        raise RuntimeError(f"the {name} bench run lost its lease")
                    timings[name].append(_write_times(publisher, n, trial * n))
    finally:
        pair.stop()
    plain_t, wait_t = timings["plain"][1:], timings["wait"][1:]
    pooled_plain = [v for t in plain_t for v in t]
    pooled_wait = [v for t in wait_t for v in t]
    p50, w50 = median(pooled_plain), median(pooled_wait)
    note = (
        f"baseline p99 {percentile(pooled_plain, 99):.3f} ms; one replica on loopback; "
        f"{n} single-event writes per trial"
    )
    return [
        trials_row(
            "sentinel: event write, MIN_REPLICAS=1 (WAIT 1)",
            "ms",
            wait_t,
            baseline=p50,
            baseline_name="the same write, MIN_REPLICAS=0",
            note=note,
        ),
        Row(
            name="sentinel: added by WAIT per write",
            unit="ms",
            n=len(pooled_wait),
            median=w50 - p50,
            p99=percentile(pooled_wait, 99) - percentile(pooled_plain, 99),
            trial_min=min(median(w) - median(p) for w, p in zip(wait_t, plain_t, strict=True)),
            trial_max=max(median(w) - median(p) for w, p in zip(wait_t, plain_t, strict=True)),
            baseline=p50,
            baseline_name="MIN_REPLICAS=0 p50; ratio = WAIT p50 / plain p50",
            target="-",
            met=None,
            note="measured, no target set by the issue",
            ratio=w50 / p50 if p50 > 0 else None,
        ),
    ]
