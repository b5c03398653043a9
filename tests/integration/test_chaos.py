"""Chaos: hundreds of runs on real workers while runs are cancelled, workers are
SIGKILLed and Redis restarts. Every guarantee of the README must hold at the end.

Faults are injected from the test's main thread, driven by what the session
streams deliver (the n-th `started` event, a run's own `started`, a grandchild's
pid), never by sleeps. The random choices come from one seeded `random.Random`
(seed printed; `CHAOS_SEED=<n>` replays another); process timing is not seeded.

Processes are judged by the process table, and a pid is remembered with its
start time and checked for its run's marker, so a recycled pid is never taken
for a run's process (and never killed by the cleanup).
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import redis
from pydantic import SecretStr
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from producer.client import Client
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.redis_server import RedisServer
from worker.proctree import RUN_MARKER_ENV, kill_run_tree, marked_runs, read_stat

SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
SESSIONS = 40
RUNS_PER_SESSION = 5
WORKERS = 4
KILLS = 10  # ~5% of the runs
CANCEL_SHARE = 0.20
COMPLETION_LIMIT_S = 120.0  # from the last submit until every run has its `finished`
STREAM_GRACE_S = 15.0  # for the streams to deliver what the logs already hold
PROCESS_GRACE_S = 20.0  # for leftovers another party is expected to kill
ALLOWED_STATUSES = {"succeeded", "interrupted", "lost", "failed"}

FAST = {
    "lease_ttl_s": 2.0,
    "lease_renew_s": 0.5,
    "reaper_interval_s": 0.5,
    "shutdown_grace_s": 2.0,
}

SLOW = "slow"  # FAKE: slow, a short run of random length
DETACH = "detach"  # FAKE: grandchild seconds=300 then=exit: ends at once, grandchild stays
LONG = "long"  # FAKE: grandchild seconds=1..3: a longer run with a grandchild
HOLD = "hold"  # FAKE: grandchild seconds=300: runs until cancelled (or its worker dies)
KIND_WEIGHTS = {SLOW: 70, DETACH: 12, LONG: 12, HOLD: 6}

_GRANDCHILD_RE = re.compile(r"grandchild_pid=(\d+)")


# -- processes --------------------------------------------------------------------


def _carries_marker(pid: int, run_id: str) -> bool:
    marker = f"{RUN_MARKER_ENV}={run_id}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _has_any_marker(pid: int) -> bool:
    prefix = f"{RUN_MARKER_ENV}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return any(item.startswith(prefix) for item in handle.read().split(b"\0"))
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and stat.ppid == pid and stat.state not in ("Z", "X"):
                found.append(stat.pid)
    return found


@dataclass(frozen=True, slots=True)
class Proc:
    """A process of a run: pid + start time (None: gone, or not the run's, when learned)."""

    pid: int
    ticks: int | None

    @classmethod
    def learn(cls, pid: int, run_id: str) -> Proc:
        before = read_stat(pid)
        if before is None or not _carries_marker(pid, run_id):
            return cls(pid, None)
        after = read_stat(pid)  # still the same process that carried the marker?
        if after is None or after.start_ticks != before.start_ticks:
            return cls(pid, None)
        return cls(pid, before.start_ticks)

    def alive(self) -> bool:
        stat = read_stat(self.pid)
        return (
            self.ticks is not None
            and stat is not None
            and stat.start_ticks == self.ticks
            and stat.state not in ("Z", "X")
        )

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


# -- the plan and what was observed -------------------------------------------------


@dataclass(slots=True)
class Run:
    index: int
    session_id: str
    kind: str
    prompt: str
    run_id: str = ""
    queued_seq: int = 0
    # cancel plan: at the n-th `started` event of the whole test, or at its own start
    cancel_at: int | None = None
    cancel_on_start: bool = False
    cancel_outcome: str | None = None
    # observed through the streams
    worker: str | None = None
    started_seen: bool = False
    cli: Proc | None = None
    grandchildren: list[Proc] = field(default_factory=list)
    status: str | None = None
    # its worker was SIGKILLed while it ran (monotonic time), and when `lost` arrived
    killed_at: float | None = None
    lost_after_s: float | None = None


def _kind(rng: random.Random) -> str:
    kinds = list(KIND_WEIGHTS)
    return rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]


def _prompt(kind: str, rng: random.Random, index: int) -> str:
    directive = {
        SLOW: lambda: f"FAKE: slow n={rng.randint(1, 8)} delay_ms={rng.randint(10, 80)}",
        DETACH: lambda: "FAKE: grandchild seconds=300 then=exit",
        LONG: lambda: f"FAKE: grandchild seconds={rng.randint(1, 3)}",
        HOLD: lambda: "FAKE: grandchild seconds=300",
    }[kind]()
    return f"chaos run {index}\n{directive}"


def _plan(rng: random.Random) -> list[Run]:
    """Runs in submit order: sessions interleaved at random, each session in its own order."""
    order = [s for s in range(SESSIONS) for _ in range(RUNS_PER_SESSION)]
    rng.shuffle(order)
    runs = []
    for index, session in enumerate(order):
        kind = _kind(rng)
        runs.append(Run(index, f"chaos-{session:02d}", kind, _prompt(kind, rng, index)))
    # Hold runs are always cancelled (once their grandchild shows); others at random.
    holds = sum(r.kind == HOLD for r in runs)
    others = [r for r in runs if r.kind != HOLD]
    wanted = max(0, round(CANCEL_SHARE * len(runs)) - holds)
    for run in rng.sample(others, min(wanted, len(others))):
        if rng.random() < 0.5:
            run.cancel_on_start = True
        else:
            run.cancel_at = rng.randint(0, int(0.75 * len(runs)))
    return runs


# -- workers ----------------------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    """The worker processes; a killed one is replaced at once."""

    start_worker: WorkerFactory
    settings: Settings
    env: dict[str, str]
    live: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    everyone: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0
    killed: int = 0

    def spawn(self) -> str:
        name = f"chaos-w{self.started}"
        self.started += 1
        proc = self.start_worker(name, settings_override=self.settings, env=self.env)
        self.live[name] = proc
        self.everyone.append(proc)
        return name

    def kill(self, name: str) -> None:
        """SIGKILL the worker's main process and its work horse (no warning, no cleanup)."""
        proc = self.live.pop(name)
        os.kill(proc.pid, signal.SIGSTOP)  # frozen, it cannot fork a new horse meanwhile
        horses = [pid for pid in _children(proc.pid) if not _has_any_marker(pid)]
        os.kill(proc.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed += 1

    def stop_all(self) -> None:
        """Cold stop (two SIGTERMs) of every worker still alive; SIGKILL the stubborn."""
        for proc in self.everyone:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)
        for proc in self.everyone:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live.clear()


# -- following the sessions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamEnd:
    session_id: str
    error: str | None


Item = Envelope | StreamEnd


def _follow(
    client: Client,
    session_id: str,
    run_ids: frozenset[str],
    inbox: queue.Queue[Item],
    timeout_s: float,
) -> None:
    """Stream one session from its start until each of its runs has finished."""
    remaining = set(run_ids)
    error: str | None = None
    try:
        for envelope in client.stream(session_id, timeout_s=timeout_s):
            inbox.put(envelope)
            if envelope.type is EventType.FINISHED:
                remaining.discard(envelope.run_id)
                if not remaining:
                    break
    except Exception as exc:  # reported by the main thread
        error = repr(exc)
    inbox.put(StreamEnd(session_id, error))


def _texts(envelope: Envelope) -> list[str]:
    if envelope.type is not EventType.MESSAGE:
        return []
    return [str(b.get("text")) for b in envelope.data["content"] if b.get("type") == "text"]


# -- the chaos driver ------------------------------------------------------------------


@dataclass(slots=True)
class Chaos:
    client: Client
    server: RedisServer
    fleet: Fleet
    rng: random.Random
    runs: dict[str, Run]
    kill_at: set[int]
    restart_at: int
    started_count: int = 0
    cancels_sent: int = 0
    cancel_outcomes: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    # run ids a killed worker's RQ record named as its current job, by worker
    victims: dict[str, str] = field(default_factory=dict)
    streamed: dict[str, list[Envelope]] = field(default_factory=dict)
    stream_errors: dict[str, str | None] = field(default_factory=dict)

    def observe(self, envelope: Envelope) -> None:
        self.streamed.setdefault(envelope.session_id, []).append(envelope)
        run = self.runs.get(envelope.run_id)
        if run is None:
            return
        if envelope.type is EventType.STARTED:
            run.started_seen = True
            run.worker = str(envelope.data["worker"])
            run.cli = Proc.learn(int(envelope.data["pid"]), run.run_id)
            self._on_started(run)
        for text in _texts(envelope):
            if match := _GRANDCHILD_RE.fullmatch(text):
                pid = int(match.group(1))
                if all(p.pid != pid for p in run.grandchildren):
                    run.grandchildren.append(Proc.learn(pid, run.run_id))
                    if run.kind == HOLD and run.killed_at is None and run.status is None:
                        self._cancel(run)
        if envelope.type is EventType.FINISHED:
            run.status = str(envelope.data["status"])
            if run.status == "lost" and run.killed_at is not None:
                run.lost_after_s = time.monotonic() - run.killed_at

    def _on_started(self, run: Run) -> None:
        index = self.started_count
        self.started_count += 1
        if run.cancel_on_start:
            self._cancel(run)
        for other in self.runs.values():
            if other.cancel_at == index:
                self._cancel(other)
        if index in self.kill_at:
            self._kill_a_worker()
        if index == self.restart_at:
            self.server.restart()  # clean shutdown: the AOF keeps every write
            self.restarts += 1

    def _cancel(self, run: Run) -> None:
        if run.cancel_outcome is not None:
            return
        result = self.client.cancel(run.session_id, run_id=run.run_id, reason="chaos")
        run.cancel_outcome = result.outcome.value
        self.cancels_sent += 1
        self.cancel_outcomes[result.outcome.value] += 1

    def _kill_a_worker(self) -> None:
        live = sorted(self.fleet.live)
        # Half the time prefer a worker running a held run: its grandchild is then
        # left for the survivors on this host to kill.
        holding = sorted(
            {
                r.worker
                for r in self.runs.values()
                if r.kind == HOLD
                and r.status is None
                and r.grandchildren
                and r.worker in self.fleet.live
                and r.cancel_outcome is None
            }
            - {None}
        )
        name = (
            self.rng.choice(holding)
            if holding and self.rng.random() < 0.5
            else self.rng.choice(live)
        )
        current = self._rq_current_job(name)
        self.fleet.kill(name)
        killed_at = time.monotonic()
        if current is not None:
            self.victims[current] = name
        for run in self.runs.values():
            if run.worker == name and run.started_seen and run.status is None:
                run.killed_at = killed_at
            elif run.run_id == current and run.status is None:
                run.killed_at = killed_at
        self.fleet.spawn()

    def _rq_current_job(self, name: str) -> str | None:
        try:
            worker = Worker.find_by_key(
                Worker.redis_worker_namespace_prefix + name,
                connection=self.client.redis,
                serializer=JSONSerializer,
            )
            return None if worker is None else cast(str | None, worker.get_current_job_id())
        except redis.RedisError:
            return None


# -- checks ------------------------------------------------------------------------


def _diagnose(client: Client, chaos: Chaos, run: Run) -> str:
    """Everything Redis knows about a run that did not end as it should."""
    record = cast(
        dict[bytes, bytes], client.redis.hgetall(client.keys.run(run.session_id, run.run_id))
    )
    pending = cast(list[bytes], client.redis.lrange(client.keys.pending(run.session_id), 0, -1))
    try:
        job = Job.fetch(run.run_id, connection=client.redis, serializer=JSONSerializer)
        rq_status = str(job.get_status())
    except NoSuchJobError:
        rq_status = "no job"
    return (
        f"run {run.run_id} (#{run.index}, {run.kind}) of {run.session_id}: "
        f"record={ {k.decode(): v.decode() for k, v in record.items()} } "
        f"pending={[p.decode() for p in pending]} rq={rq_status} "
        f"started_seen={run.started_seen} worker={run.worker} "
        f"killed_worker_current_job={chaos.victims.get(run.run_id)} "
        f"cancel={run.cancel_outcome}"
    )


def _check_session_log(session_id: str, history: list[Envelope], runs: list[Run]) -> list[str]:
    """Seq, exactly-one-finished-last, one run at a time in submit order."""
    problems: list[str] = []
    seqs = [e.seq for e in history]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{session_id}: seq not contiguous from 1: {seqs}")
    by_run: dict[str, list[Envelope]] = {}
    for envelope in history:
        by_run.setdefault(envelope.run_id, []).append(envelope)
    for run in runs:
        events = by_run.get(run.run_id, [])
        types = [e.type for e in events]
        if types.count(EventType.QUEUED) != 1 or types[:1] != [EventType.QUEUED]:
            problems.append(f"{run.run_id}: not exactly one queued event first: {types}")
        if types.count(EventType.FINISHED) != 1 or types[-1:] != [EventType.FINISHED]:
            problems.append(f"{run.run_id}: not exactly one finished event last: {types}")
            continue
        status = str(events[-1].data["status"])
        if status not in ALLOWED_STATUSES:
            problems.append(f"{run.run_id}: finished with status {status}")
        if status == "lost" and not any(
            e.type is EventType.ERROR and e.data["code"] == "lost" for e in events
        ):
            problems.append(f"{run.run_id}: lost without an error{{lost}} event")
        if run.cancel_outcome == "cancelled_queued" and (
            status != "interrupted" or EventType.STARTED in types
        ):
            problems.append(f"{run.run_id}: cancelled while queued, yet {types} {status}")
        if status == "interrupted" and run.cancel_outcome is None:
            problems.append(f"{run.run_id}: interrupted, but nobody cancelled it")
    foreign = set(by_run) - {r.run_id for r in runs}
    if foreign:
        problems.append(f"{session_id}: events of runs never submitted: {sorted(foreign)}")
    active: str | None = None
    started_order: list[str] = []
    for envelope in history:
        if envelope.type is EventType.STARTED:
            if active is not None:
                problems.append(f"{session_id}: {envelope.run_id} started while {active} ran")
            active = envelope.run_id
            started_order.append(envelope.run_id)
        elif envelope.type is EventType.FINISHED and envelope.run_id == active:
            active = None
    submit_order = [r.run_id for r in sorted(runs, key=lambda r: r.queued_seq)]
    if started_order != [r for r in submit_order if r in set(started_order)]:
        problems.append(f"{session_id}: runs started out of submit order: {started_order}")
    return problems


def _await(condition: Callable[[], bool], limit_s: float) -> bool:
    """Poll a condition until it holds or limit_s passes (a bounded wait, no fixed sleep)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- the test ------------------------------------------------------------------------


@pytest.mark.slow
def test_chaos_every_run_finishes_once_and_nothing_is_left_behind(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    print(f"\nchaos seed={SEED} (CHAOS_SEED=<n> to replay another)")
    rng = random.Random(SEED)
    server = RedisServer(tmp_path / "redis")
    server.start()
    own = settings.model_copy(update={"redis_url": SecretStr(server.url), **FAST})
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config")}
    fleet = Fleet(start_worker, own, env)
    client = Client(own)
    plan = _plan(rng)
    # Fault points, as the n-th `started` event (some runs never start: cancelled queued).
    kill_at = set(rng.sample(range(5, int(0.75 * len(plan))), KILLS))
    restart_at = rng.choice([i for i in range(len(plan) // 3, len(plan) // 2) if i not in kill_at])
    runs: dict[str, Run] = {}
    threads: list[threading.Thread] = []
    began = time.monotonic()
    try:
        for _ in range(WORKERS):
            fleet.spawn()
        for run in plan:
            handle = client.submit(session_id=run.session_id, prompt=run.prompt)
            run.run_id, run.queued_seq = handle.run_id, handle.queued_seq
            runs[run.run_id] = run
        deadline = time.monotonic() + COMPLETION_LIMIT_S
        inbox: queue.Queue[Item] = queue.Queue()
        sessions = sorted({r.session_id for r in plan})
        for session_id in sessions:
            ids = frozenset(r.run_id for r in plan if r.session_id == session_id)
            thread = threading.Thread(
                target=_follow,
                args=(client, session_id, ids, inbox, COMPLETION_LIMIT_S + STREAM_GRACE_S),
                name=f"follow-{session_id}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        chaos = Chaos(client, server, fleet, rng, runs, kill_at, restart_at)

        def all_finished_in_logs() -> bool:
            return all(
                sum(e.type is EventType.FINISHED for e in client.history(s)) == RUNS_PER_SESSION
                for s in sessions
            )

        # Follow the streams, injecting faults as they report progress. The logs are
        # checked too (every 2 s), so a stream that misses its end cannot stall us.
        next_log_check = time.monotonic() + 2.0
        while len(chaos.stream_errors) < len(sessions) and time.monotonic() < deadline:
            try:
                item = inbox.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, Envelope):
                chaos.observe(item)
            elif isinstance(item, StreamEnd):
                chaos.stream_errors[item.session_id] = item.error
            if time.monotonic() >= next_log_check:
                next_log_check = time.monotonic() + 2.0
                if all_finished_in_logs():
                    break
        completed_s = time.monotonic() - began
        # Streams still running get a bounded grace to deliver what the logs hold.
        grace_end = time.monotonic() + STREAM_GRACE_S
        while len(chaos.stream_errors) < len(sessions) and time.monotonic() < grace_end:
            try:
                item = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Envelope):
                chaos.observe(item)
            else:
                chaos.stream_errors[item.session_id] = item.error

        histories = {s: client.history(s) for s in sessions}
        statuses: Counter[str] = Counter()
        for history in histories.values():
            for envelope in history:
                if envelope.type is EventType.FINISHED:
                    statuses[str(envelope.data["status"])] += 1
        lost_times = sorted(r.lost_after_s for r in runs.values() if r.lost_after_s is not None)
        unexpected_lost = [
            r.run_id
            for r in runs.values()
            if r.killed_at is None
            and any(
                e.run_id == r.run_id and e.type is EventType.FINISHED and e.data["status"] == "lost"
                for e in histories[r.session_id]
            )
        ]
        detection = (
            f"max={max(lost_times):.2f}s median={statistics.median(lost_times):.2f}s "
            f"(n={len(lost_times)})"
            if lost_times
            else "n/a"
        )
        print(
            f"chaos summary: seed={SEED} runs={len(runs)} "
            + " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
            + f" cancels_sent={chaos.cancels_sent} {dict(sorted(chaos.cancel_outcomes.items()))}"
            f" workers_killed={fleet.killed} redis_restarts={chaos.restarts}"
            f" lost_detection {detection} lost_without_kill={len(unexpected_lost)}"
            f" completed_in={completed_s:.1f}s"
        )

        for r in runs.values():
            evs = [e for e in histories[r.session_id] if e.run_id == r.run_id]
            if evs and evs[-1].type is EventType.FINISHED and evs[-1].data["status"] == "failed":
                print("FAILED RUN", r.kind, r.prompt, [(e.type.value, e.data) for e in evs])
        print("VICTIMS", {k: (v, runs[k].started_seen, runs[k].status) for k, v in chaos.victims.items()})
        # 1. every run ended, exactly once, last; seq; one run at a time in submit order
        unfinished = [
            r
            for r in runs.values()
            if not any(
                e.run_id == r.run_id and e.type is EventType.FINISHED
                for e in histories[r.session_id]
            )
        ]
        assert not unfinished, "runs without a finished event:\n" + "\n".join(
            _diagnose(client, chaos, r) for r in unfinished
        )
        problems: list[str] = []
        for session_id in sessions:
            session_runs = [r for r in runs.values() if r.session_id == session_id]
            problems += _check_session_log(session_id, histories[session_id], session_runs)
        assert not problems, "\n".join(problems)
        assert sum(statuses.values()) == len(runs)

        # 2. the faults did happen
        assert chaos.restarts == 1
        assert fleet.killed >= KILLS // 2, f"only {fleet.killed} workers were killed"
        assert chaos.cancels_sent >= CANCEL_SHARE * len(runs) // 2

        # 3. every stream delivered exactly the log, across the Redis restart
        stuck = {s: e for s, e in chaos.stream_errors.items() if e is not None}
        missing = [s for s in sessions if s not in chaos.stream_errors]
        assert not stuck and not missing, (
            f"streams that failed: {stuck}; streams that never reached their runs' "
            f"finished events: "
            + "; ".join(
                f"{s} (delivered {len(chaos.streamed.get(s, []))} of {len(histories[s])})"
                for s in missing
            )
        )
        for session_id in sessions:
            assert chaos.streamed.get(session_id) == histories[session_id], session_id

        # 4. no process of any run is alive (leftovers of killed workers are killed by
        #    the survivors' maintenance on this host, so allow them a bounded wait)
        procs = [p for r in runs.values() for p in [*([r.cli] if r.cli else []), *r.grandchildren]]
        assert _await(lambda: not any(p.alive() for p in procs), PROCESS_GRACE_S), [
            p.pid for p in procs if p.alive()
        ]
        assert _await(lambda: not marked_runs(own.scope), PROCESS_GRACE_S), marked_runs(own.scope)

        # 5. no session lease, pending run or running entry is left; RQ shows no ghost
        leases = [s for s in sessions if client.redis.exists(client.keys.lease(s))]
        assert not leases, f"leases left: {leases}"
        pending = [s for s in sessions if client.redis.llen(client.keys.pending(s))]
        assert not pending, f"pending runs left: {pending}"
        assert not client.redis.hgetall(client.keys.running)
        registry = StartedJobRegistry(
            own.queue_name, connection=client.redis, serializer=JSONSerializer
        )
        ghosts = registry.get_job_ids()
        assert not ghosts, "started RQ jobs left:\n" + "\n".join(
            _diagnose(client, chaos, runs[g]) if g in runs else g for g in ghosts
        )
    finally:
        fleet.stop_all()
        for run in runs.values():
            for proc in [*([run.cli] if run.cli else []), *run.grandchildren]:
                proc.kill()
        for run_id in marked_runs(own.scope):  # anything of ours the above missed
            kill_run_tree(run_id, None)
        client.close()
        server.stop()
        for thread in threads:
            thread.join(timeout=0.1)
        print(f"chaos test took {time.monotonic() - began:.1f}s")
