"""Chaos: hundreds of runs on real workers while runs are cancelled, workers are
SIGKILLed and Redis restarts. Every guarantee of the README must hold at the end.

Faults are injected from the test's main thread, driven by what the session
streams deliver (the n-th `started` event, a run's own `started`, a grandchild's
pid), never by sleeps. The random choices come from one seeded `random.Random`
(seed printed; `CHAOS_SEED=<n>` tries another); process timing is not seeded.

Processes are judged by the process table. A pid is remembered with its start
time and only if it carries its run's marker, so a recycled pid is never taken
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
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
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
from producer.errors import StreamTimeout
from shared.events import Envelope, EventType
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import Proc, envelope_texts
from tests.redis_server import RedisServer
from worker.markers import RUN_MARKER_ENV, SCOPE_MARKER_ENV
from worker.proctree import kill_run_tree, marked_runs, read_stat
from worker.reaper import kill_orphans

SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
SESSIONS = 40
RUNS_PER_SESSION = 5
WORKERS = 4
KILLS = 10  # random worker kills, ~5% of the runs (plus the one scripted below)
CANCEL_SHARE = 0.20
COMPLETION_LIMIT_S = 120.0  # from the last submit until every run has its `finished`
STALL_S = 20.0  # no event at all for this long while runs are open: stuck
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
HOLD_PROMPT = "FAKE: grandchild seconds=300"

# A session submitted first: a held run, then one that a second worker takes and
# waits with for its turn. That waiting worker is killed (the scripted fault).
WAITING_SESSION = "chaos-waiting"

_GRANDCHILD_RE = re.compile(r"grandchild_pid=(\d+)")


class KnownProductBug(AssertionError):
    """A broken guarantee of a kind the chaos test once found (see the tests below).

    Kept as distinct exception types so a regression names what broke."""


class RunsNeverFinished(KnownProductBug):
    """Some runs have no `finished` event."""


class WorkerQuit(KnownProductBug):
    """A worker process exited although nobody stopped or killed it."""


class KilledAsOrphan(KnownProductBug):
    """A live run's process was killed by the orphan sweep."""


# -- processes --------------------------------------------------------------------


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def _has_any_marker(pid: int) -> bool:
    prefix = f"{RUN_MARKER_ENV}=".encode()
    return any(item.startswith(prefix) for item in _environ(pid))


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and stat.ppid == pid and stat.state not in ("Z", "X"):
                found.append(stat.pid)
    return found


def learn_proc(pid: int, run_id: str) -> Proc:
    """The process `pid` if it carries the run's marker (pid + start time)."""
    before = read_stat(pid)
    if before is None or f"{RUN_MARKER_ENV}={run_id}".encode() not in _environ(pid):
        return Proc(pid, None)
    after = read_stat(pid)  # still the very process that carried the marker?
    if after is None or after.start_ticks != before.start_ticks:
        return Proc(pid, None)
    return Proc(pid, before.start_ticks)


def _await(condition: Callable[[], bool], limit_s: float) -> bool:
    """Poll a condition until it holds or limit_s passes (a bounded wait)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- workers and the deployment -------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    """The worker processes; a killed one is replaced at once."""

    start_worker: WorkerFactory
    settings: Settings
    env: dict[str, str]
    connection: redis.Redis
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

    def current_job(self, name: str) -> str | None:
        """The run RQ says this worker is executing (running, or waiting for its turn)."""
        try:
            worker = Worker.find_by_key(
                Worker.redis_worker_namespace_prefix + name,
                connection=self.connection,
                serializer=JSONSerializer,
            )
            return None if worker is None else worker.get_current_job_id()
        except redis.RedisError:
            return None

    def kill(self, name: str) -> str | None:
        """SIGKILL the worker's main process and its work horse, replace it; returns
        the job it was executing."""
        proc = self.live.pop(name)
        os.kill(proc.pid, signal.SIGSTOP)  # frozen: it cannot fork a new horse meanwhile
        current = self.current_job(name)
        horses = [pid for pid in _children(proc.pid) if not _has_any_marker(pid)]
        os.kill(proc.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed += 1
        self.spawn()
        return current

    def quit(self) -> list[str]:
        """Workers that exited although nobody stopped or killed them."""
        return sorted(name for name, proc in self.live.items() if proc.poll() is not None)

    def stop_all(self) -> None:
        """Cold stop of every worker still alive: SIGTERM, and once that has been taken
        (two sent at once may merge into one pending signal) a second SIGTERM; SIGKILL
        the stubborn."""
        alive = [proc for proc in self.everyone if proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        _await(lambda: all(proc.poll() is not None for proc in alive), 1.0)
        for proc in alive:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.everyone:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live.clear()


@dataclass(slots=True)
class Deployment:
    server: RedisServer
    settings: Settings
    client: Client
    fleet: Fleet
    learned: list[Proc] = field(default_factory=list)  # killed at teardown, pass or fail

    def learn(self, pid: int, run_id: str) -> Proc:
        proc = learn_proc(pid, run_id)
        self.learned.append(proc)
        return proc


@contextlib.contextmanager
def _deployment(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path, workers: int, **update: object
) -> Iterator[Deployment]:
    """Our own redis-server, a client and `workers` worker processes; all torn down after."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    own = settings.model_copy(update={"redis_url": SecretStr(server.url), **update})
    client = Client(own)
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config")}
    fleet = Fleet(start_worker, own, env, client.redis)
    deployment = Deployment(server, own, client, fleet)
    try:
        for _ in range(workers):
            fleet.spawn()
        yield deployment
    finally:
        fleet.stop_all()
        for proc in deployment.learned:
            proc.kill()
        for run_id in marked_runs(own.scope):  # anything of ours still alive
            kill_run_tree(run_id, None)
        client.close()
        server.stop()


def _diagnose(client: Client, session_id: str, run_id: str) -> str:
    """What Redis knows about a run."""
    raw = cast(dict[bytes, bytes], client.redis.hgetall(client.keys.run(session_id, run_id)))
    record = {k.decode(): v.decode() for k, v in raw.items()}
    pending = cast(list[bytes], client.redis.lrange(client.keys.pending(session_id), 0, -1))
    try:
        job = Job.fetch(run_id, connection=client.redis, serializer=JSONSerializer)
        rq_status = str(job.get_status())
    except NoSuchJobError:
        rq_status = "no job"
    queue_name = client.settings.queue_name
    in_queue = run_id in client.queue.get_job_ids()
    in_started = run_id in StartedJobRegistry(
        queue_name, connection=client.redis, serializer=JSONSerializer
    ).get_job_ids(cleanup=False)
    return (
        f"record={record} pending={[p.decode() for p in pending]} rq={rq_status} "
        f"in_rq_queue={in_queue} in_rq_started={in_started}"
    )


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
    # the worker executing it was SIGKILLed (monotonic time), and when `lost` arrived
    killed_at: float | None = None
    killed_worker: str | None = None
    lost_after_s: float | None = None

    def procs(self) -> list[Proc]:
        return [*([self.cli] if self.cli else []), *self.grandchildren]


def _prompt(kind: str, rng: random.Random, index: int) -> str:
    if kind == SLOW:
        directive = f"FAKE: slow n={rng.randint(1, 8)} delay_ms={rng.randint(10, 80)}"
    elif kind == DETACH:
        directive = "FAKE: grandchild seconds=300 then=exit"
    elif kind == LONG:
        directive = f"FAKE: grandchild seconds={rng.randint(1, 3)}"
    else:
        directive = HOLD_PROMPT
    return f"chaos run {index}\n{directive}"


def _plan(rng: random.Random) -> list[Run]:
    """Runs in submit order: the scripted pair first, then sessions interleaved at random."""
    runs = [
        Run(0, WAITING_SESSION, HOLD, f"chaos run 0\n{HOLD_PROMPT}"),
        Run(1, WAITING_SESSION, SLOW, "chaos run 1\nFAKE: slow n=2 delay_ms=10"),
    ]
    order = [s for s in range(SESSIONS) for _ in range(RUNS_PER_SESSION)]
    rng.shuffle(order)
    kinds = list(KIND_WEIGHTS)
    for session in order:
        kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
        index = len(runs)
        runs.append(Run(index, f"chaos-{session:02d}", kind, _prompt(kind, rng, index)))
    # Held runs are always cancelled (once their grandchild shows); others at random.
    holds = sum(r.kind == HOLD for r in runs)
    others = [r for r in runs[2:] if r.kind != HOLD]
    wanted = max(0, round(CANCEL_SHARE * len(runs)) - holds)
    for run in rng.sample(others, min(wanted, len(others))):
        if rng.random() < 0.5:
            run.cancel_on_start = True
        else:
            run.cancel_at = rng.randint(0, int(0.75 * len(runs)))
    return runs


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


# -- the chaos driver ------------------------------------------------------------------


@dataclass(slots=True)
class Chaos:
    d: Deployment
    rng: random.Random
    plan: list[Run]
    kill_at: set[int]
    restart_at: int
    runs: dict[str, Run] = field(default_factory=dict)
    inbox: queue.Queue[Item] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)
    started_count: int = 0
    cancels_sent: int = 0
    cancel_outcomes: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    restarted_at: float = 0.0  # wall clock, like envelope.ts
    killed_names: list[str] = field(default_factory=list)
    waiting_kill: str | None = None  # what the scripted kill found its worker doing
    streamed: dict[str, list[Envelope]] = field(default_factory=dict)
    stream_ends: dict[str, str | None] = field(default_factory=dict)
    last_event: float = field(default_factory=time.monotonic)

    @property
    def sessions(self) -> list[str]:
        return sorted({r.session_id for r in self.plan})

    def submit_and_follow(self) -> None:
        for run in self.plan:
            handle = self.d.client.submit(session_id=run.session_id, prompt=run.prompt)
            run.run_id, run.queued_seq = handle.run_id, handle.queued_seq
            self.runs[run.run_id] = run
        for session_id in self.sessions:
            ids = frozenset(r.run_id for r in self.plan if r.session_id == session_id)
            thread = threading.Thread(
                target=_follow,
                args=(
                    self.d.client,
                    session_id,
                    ids,
                    self.inbox,
                    COMPLETION_LIMIT_S + STREAM_GRACE_S,
                ),
                name=f"follow-{session_id}",
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)

    def drive(self) -> None:
        """Follow the streams, injecting faults as they report progress, until every
        run has finished (the logs are checked too, every 2 s, so a stream that misses
        its end cannot stall us), nothing happens for STALL_S, or time is up."""
        deadline = time.monotonic() + COMPLETION_LIMIT_S
        next_log_check = time.monotonic() + 2.0
        while time.monotonic() < min(deadline, self.last_event + STALL_S):
            if len(self.stream_ends) == len(self.sessions):
                return
            self._take(0.5)
            if time.monotonic() >= next_log_check:
                next_log_check = time.monotonic() + 2.0
                if not self.unfinished(self.histories()):
                    return

    def settle_streams(self) -> None:
        """Let every stream deliver what its session's log holds (bounded)."""
        grace_end = time.monotonic() + STREAM_GRACE_S
        while time.monotonic() < grace_end:
            histories = self.histories()
            if all(
                s in self.stream_ends or len(self.streamed.get(s, [])) >= len(histories[s])
                for s in self.sessions
            ):
                return
            self._take(1.0)

    def _take(self, wait_s: float) -> None:
        try:
            item = self.inbox.get(timeout=wait_s)
        except queue.Empty:
            return
        self.last_event = time.monotonic()
        if isinstance(item, StreamEnd):
            self.stream_ends[item.session_id] = item.error
        else:
            self.observe(item)

    def histories(self) -> dict[str, list[Envelope]]:
        return {s: self.d.client.history(s) for s in self.sessions}

    def unfinished(self, histories: dict[str, list[Envelope]]) -> list[Run]:
        finished = {e.run_id for h in histories.values() for e in h if e.type is EventType.FINISHED}
        return [r for r in self.plan if r.run_id not in finished]

    # -- reacting to events ---------------------------------------------------------

    def observe(self, envelope: Envelope) -> None:
        self.streamed.setdefault(envelope.session_id, []).append(envelope)
        run = self.runs.get(envelope.run_id)
        if run is None:
            return
        if envelope.type is EventType.STARTED:
            run.started_seen = True
            run.worker = str(envelope.data["worker"])
            run.cli = self.d.learn(int(envelope.data["pid"]), run.run_id)
            self._on_started(run)
        for text in envelope_texts(envelope):
            if (match := _GRANDCHILD_RE.fullmatch(text)) and not run.grandchildren:
                run.grandchildren.append(self.d.learn(int(match.group(1)), run.run_id))
                self._on_grandchild(run)
        if envelope.type is EventType.FINISHED:
            run.status = str(envelope.data["status"])
            if run.status == "lost" and run.killed_at is not None:
                run.lost_after_s = time.monotonic() - run.killed_at

    def _on_started(self, run: Run) -> None:
        index = self.started_count
        self.started_count += 1
        if run.cancel_on_start:
            self._cancel(run)
        for other in self.plan:
            if other.cancel_at == index:
                self._cancel(other)
        if index in self.kill_at:
            self._kill_a_worker()
        if index == self.restart_at:
            self.restarted_at = time.time()
            self.d.server.restart()  # clean shutdown: the AOF keeps every write
            self.restarts += 1

    def _on_grandchild(self, run: Run) -> None:
        if run.kind != HOLD or run.killed_at is not None or run.status is not None:
            return
        if run.index == 0:
            self._kill_the_waiting_worker(self.plan[1])
        self._cancel(run)

    def _cancel(self, run: Run) -> None:
        if run.cancel_outcome is not None:
            return
        result = self.d.client.cancel(run.session_id, run_id=run.run_id, reason="chaos")
        run.cancel_outcome = result.outcome.value
        self.cancels_sent += 1
        self.cancel_outcomes[result.outcome.value] += 1

    def _kill(self, name: str) -> None:
        current = self.d.fleet.kill(name)
        self.killed_names.append(name)
        killed_at = time.monotonic()
        for run in self.plan:
            if run.status is None and (
                run.run_id == current or (run.worker == name and run.started_seen)
            ):
                run.killed_at, run.killed_worker = killed_at, name

    def _kill_a_worker(self) -> None:
        fleet = self.d.fleet
        # Half the time prefer a worker running a held run: its grandchild is then
        # left for the survivors on this host to kill.
        holding = sorted(
            r.worker
            for r in self.plan
            if r.kind == HOLD
            and r.worker in fleet.live
            and r.status is None
            and r.grandchildren
            and r.cancel_outcome is None
        )
        if holding and self.rng.random() < 0.5:
            self._kill(self.rng.choice(holding))
        else:
            alive = sorted(n for n, p in fleet.live.items() if p.poll() is None)
            self._kill(self.rng.choice(alive))

    def _kill_the_waiting_worker(self, waiting: Run) -> None:
        """The scripted fault: kill the worker that holds `waiting` while it waits."""
        fleet = self.d.fleet
        holder: list[str] = []

        def found() -> bool:
            holder[:] = [n for n in sorted(fleet.live) if fleet.current_job(n) == waiting.run_id]
            return bool(holder)

        if not _await(found, 10.0):
            self.waiting_kill = "no worker took the waiting run"
            return
        record = self.d.client.redis.hget(
            self.d.client.keys.run(waiting.session_id, waiting.run_id), "status"
        )
        self.waiting_kill = f"{holder[0]} held it, run record status {record!r}"
        self._kill(holder[0])


# -- checks ------------------------------------------------------------------------


def _check_session_log(session_id: str, history: list[Envelope], runs: list[Run]) -> list[str]:
    """Seq; per finished run one queued first, one finished last; one run at a time,
    in submit order."""
    problems: list[str] = []
    seqs = [e.seq for e in history]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{session_id}: seq not contiguous from 1: {seqs}")
    by_run: dict[str, list[Envelope]] = {}
    for envelope in history:
        by_run.setdefault(envelope.run_id, []).append(envelope)
    for run in runs:
        problems += _check_run(run, by_run.get(run.run_id, []))
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


def _check_run(run: Run, events: list[Envelope]) -> list[str]:
    types = [e.type for e in events]
    if types.count(EventType.QUEUED) != 1 or types[:1] != [EventType.QUEUED]:
        return [f"{run.run_id}: not exactly one queued event, first: {types}"]
    if EventType.FINISHED not in types:
        return []  # reported separately (RunsNeverFinished)
    if types.count(EventType.FINISHED) != 1 or types[-1] is not EventType.FINISHED:
        return [f"{run.run_id}: not exactly one finished event, last: {types}"]
    status = str(events[-1].data["status"])
    problems = []
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
    return problems


def _summary(
    chaos: Chaos,
    histories: dict[str, list[Envelope]],
    completed_s: float,
    quit: list[str],
    ghosts: dict[str, str | None],
) -> str:
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for history in histories.values():
        for envelope in history:
            if envelope.type is EventType.FINISHED:
                statuses[str(envelope.data["status"])] += 1
                if envelope.data["status"] == "failed":
                    failures[str(envelope.data["reason"])[:60]] += 1
    statuses["unfinished"] = len(chaos.unfinished(histories))
    lost = sorted(r.lost_after_s for r in chaos.plan if r.lost_after_s is not None)
    detection = (
        f"max={max(lost):.2f}s median={statistics.median(lost):.2f}s (n={len(lost)})"
        if lost
        else "n/a"
    )
    lost_unkilled = [r for r in chaos.plan if r.status == "lost" and r.killed_at is None]
    for run in lost_unkilled:
        finished = [e for e in histories[run.session_id] if e.run_id == run.run_id][-1]
        print(
            f"lost without a kill seen: #{run.index} {run.kind} worker={run.worker} "
            f"(killed: {run.worker in chaos.killed_names}) started_seen={run.started_seen} "
            f"finished {finished.ts - chaos.restarted_at:+.2f}s after the Redis restart"
        )
    return (
        f"chaos summary: seed={SEED} runs={len(chaos.plan)} "
        + " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
        + f" cancels_sent={chaos.cancels_sent} {dict(sorted(chaos.cancel_outcomes.items()))}"
        f" workers_killed={chaos.d.fleet.killed} redis_restarts={chaos.restarts}"
        f" lost_detection {detection} lost_without_kill={len(lost_unkilled)}"
        f" failed_reasons={dict(failures)} workers_quit_by_themselves={quit}"
        f" rq_started_ghosts={len(ghosts)} completed_in={completed_s:.1f}s"
        f" scripted_kill=({chaos.waiting_kill})"
    )


def _failed_runs(chaos: Chaos, histories: dict[str, list[Envelope]]) -> tuple[list[str], list[str]]:
    """Failed runs, as (error{internal} messages, ids of runs whose CLI was SIGKILLed
    though nobody cancelled them); any other failure is an assertion error."""
    internal: list[str] = []
    orphaned: list[str] = []
    other: list[str] = []
    for history in histories.values():
        for envelope in history:
            if envelope.type is not EventType.FINISHED or envelope.data["status"] != "failed":
                continue
            run = chaos.runs[envelope.run_id]
            codes = [
                str(e.data["code"])
                for e in history
                if e.run_id == run.run_id and e.type is EventType.ERROR
            ]
            if "internal" in codes:
                internal.append(str(envelope.data["reason"]))
            elif envelope.data["exit_code"] == -9 and run.cancel_outcome is None:
                orphaned.append(run.run_id)
            else:
                other.append(f"{run.run_id} {codes} {envelope.data}")
    assert not other, "runs failed for an unknown reason:\n" + "\n".join(other)
    return internal, orphaned


def _check_streams(chaos: Chaos, histories: dict[str, list[Envelope]]) -> None:
    """Every stream delivered exactly its session's log, across the Redis restart."""
    errors = {s: e for s, e in chaos.stream_ends.items() if e is not None}
    assert not errors, f"streams that failed: {errors}"
    for session_id in chaos.sessions:
        delivered = chaos.streamed.get(session_id, [])
        assert delivered == histories[session_id], (
            f"{session_id}: the stream delivered {[e.seq for e in delivered]}, "
            f"the log holds {[e.seq for e in histories[session_id]]}"
        )


def _check_leftovers(chaos: Chaos, open_runs: list[Run]) -> None:
    """No process, lease, pending or running entry is left over (pending runs of
    sessions with a run that never finished are reported separately)."""
    client, scope = chaos.d.client, chaos.d.settings.scope
    procs = [p for r in chaos.plan for p in r.procs()]
    assert _await(lambda: not any(p.alive() for p in procs), PROCESS_GRACE_S), [
        p.pid for p in procs if p.alive()
    ]
    assert _await(lambda: not marked_runs(scope), PROCESS_GRACE_S), marked_runs(scope)
    leases = [s for s in chaos.sessions if client.redis.exists(client.keys.lease(s))]
    assert not leases, f"session leases left: {leases}"
    open_sessions = {r.session_id for r in open_runs}
    pending = [
        s
        for s in chaos.sessions
        if s not in open_sessions and client.redis.llen(client.keys.pending(s))
    ]
    assert not pending, f"pending runs left: {pending}"
    assert not client.redis.hgetall(client.keys.running)


def _rq_ghosts(chaos: Chaos, open_runs: list[Run]) -> dict[str, str | None]:
    """Jobs RQ still lists as started, apart from runs that never finished (those are
    reported on their own), with the worker RQ says executed them."""
    client = chaos.d.client
    registry = StartedJobRegistry(
        chaos.d.settings.queue_name, connection=client.redis, serializer=JSONSerializer
    )
    open_ids = {r.run_id for r in open_runs}
    ghosts: dict[str, str | None] = {}
    for job_id in registry.get_job_ids():
        if job_id not in open_ids:
            try:
                job = Job.fetch(job_id, connection=client.redis, serializer=JSONSerializer)
                ghosts[job_id] = job.worker_name
            except NoSuchJobError:
                ghosts[job_id] = None
    return ghosts


# -- the tests -----------------------------------------------------------------------


@pytest.mark.slow
def test_chaos_every_run_finishes_once_and_nothing_is_left_behind(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    print(f"\nchaos seed={SEED} (CHAOS_SEED=<n> to try another)")
    rng = random.Random(SEED)
    plan = _plan(rng)
    # Fault points, as the n-th `started` event (some runs never start).
    kill_at = set(rng.sample(range(5, int(0.75 * len(plan))), KILLS))
    restart_at = rng.choice([i for i in range(len(plan) // 3, len(plan) // 2) if i not in kill_at])
    began = time.monotonic()
    try:
        with _deployment(settings, start_worker, tmp_path, WORKERS, **FAST) as d:
            chaos = Chaos(d, rng, plan, kill_at, restart_at)
            chaos.submit_and_follow()
            chaos.drive()
            completed_s = time.monotonic() - began
            chaos.settle_streams()
            histories = chaos.histories()
            open_runs = chaos.unfinished(histories)
            quit = d.fleet.quit()
            ghosts = _rq_ghosts(chaos, open_runs)
            print(_summary(chaos, histories, completed_s, quit, ghosts))

            problems = [
                problem
                for s in chaos.sessions
                for problem in _check_session_log(
                    s, histories[s], [r for r in plan if r.session_id == s]
                )
            ]
            assert not problems, "\n".join(problems)
            assert chaos.restarts == 1
            assert d.fleet.killed >= KILLS // 2, f"only {d.fleet.killed} workers were killed"
            assert chaos.cancels_sent >= CANCEL_SHARE * len(plan) // 2
            _check_streams(chaos, histories)
            _check_leftovers(chaos, open_runs)
            # A started RQ job of an ended run is only acceptable where its worker died
            # (killed here, or quit: reported below) between the run's `finished` and
            # RQ's own bookkeeping; the reaper fails the RQ jobs of lost runs only.
            dead = set(chaos.killed_names) | set(quit)
            unexplained = {g: w for g, w in ghosts.items() if g not in chaos.runs or w not in dead}
            assert not unexplained, "started RQ jobs of ended runs left:\n" + "\n".join(
                f"{g} (worker {w}) "
                + (_diagnose(d.client, chaos.runs[g].session_id, g) if g in chaos.runs else "")
                for g, w in unexplained.items()
            )
            # No prompt here can fail by itself: every `failed` run is a bug.
            internal, orphaned = _failed_runs(chaos, histories)
            findings = [
                *(
                    f"never finished: #{r.index} {r.kind} {r.session_id} {r.run_id} "
                    f"(worker killed under it: {r.killed_worker}) "
                    f"{_diagnose(d.client, r.session_id, r.run_id)}"
                    for r in open_runs
                ),
                *(f"quit by itself: worker {name} (log in {tmp_path})" for name in quit),
                *(f"failed with error{{internal}}: {reason}" for reason in internal),
                *(f"killed as an orphan while running: {run_id}" for run_id in orphaned),
            ]
            if findings:
                raise KnownProductBug("\n".join(findings))
    finally:
        print(f"chaos test took {time.monotonic() - began:.1f}s")


@pytest.mark.slow
def test_a_run_whose_worker_dies_while_it_waits_for_its_turn_still_finishes(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """The chaos test's scripted fault, alone: fully deterministic."""
    with _deployment(settings, start_worker, tmp_path, 2, **FAST) as d:
        first = d.client.submit(session_id="waiting", prompt=HOLD_PROMPT)
        second = d.client.submit(session_id="waiting", prompt="FAKE: slow n=1 delay_ms=10")
        grandchild: Proc | None = None
        for envelope in first.stream(timeout_s=60):
            for text in envelope_texts(envelope):
                if match := _GRANDCHILD_RE.fullmatch(text):
                    grandchild = d.learn(int(match.group(1)), first.run_id)
            if grandchild:
                break
        holder: list[str] = []

        def second_taken() -> bool:
            holder[:] = [n for n in d.fleet.live if d.fleet.current_job(n) == second.run_id]
            return bool(holder)

        assert _await(second_taken, 30), "no worker took the second run"
        run_key = d.client.keys.run("waiting", second.run_id)
        assert d.client.redis.hget(run_key, "status") == b"queued"  # it waits for its turn
        d.fleet.kill(holder[0])
        assert d.client.cancel("waiting", run_id=first.run_id, wait=True).outcome.value == (
            "cancelled_running"
        )
        assert first.wait(timeout_s=30).status == "interrupted"
        try:
            status = second.wait(timeout_s=30).status  # 15 x the lease TTL
        except StreamTimeout:
            raise RunsNeverFinished(
                f"the run never finished: {_diagnose(d.client, 'waiting', second.run_id)}"
            ) from None
        assert status in ALLOWED_STATUSES
        third = d.client.submit(session_id="waiting", prompt="FAKE: slow n=1 delay_ms=10")
        assert third.wait(timeout_s=30).status == "succeeded"


@pytest.mark.slow
def test_a_redis_outage_while_a_run_concludes_does_not_fail_it(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """What the chaos test's Redis restart used to hit (error{internal} from saving the
    session state), made deterministic: Redis goes away just before the CLI ends and
    stays away 10 s (the lease lasts 30 s)."""
    slow = {"lease_ttl_s": 30.0, "lease_renew_s": 1.0}
    with _deployment(settings, start_worker, tmp_path, 1, **slow) as d:
        handle = d.client.submit(session_id="outage", prompt="FAKE: slow n=3 delay_ms=700")
        for envelope in handle.stream(timeout_s=60):
            if "slow 2/3" in envelope_texts(envelope):
                break
        d.server.stop()  # the CLI prints its last line and ends while Redis is away
        time.sleep(10.0)  # the outage itself
        d.server.start()
        finished = handle.wait(timeout_s=90)
        assert (finished.status, finished.reason) == ("succeeded", None)


@pytest.mark.slow
def test_a_worker_survives_its_horse_dying_while_redis_is_away(
    settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """What the chaos test's Redis restart sometimes does to a worker, made
    deterministic: the horse dies (SIGKILL here) while Redis is away."""
    with _deployment(settings, start_worker, tmp_path, 1, **FAST) as d:
        [worker] = d.fleet.live.values()
        handle = d.client.submit(session_id="horse", prompt=HOLD_PROMPT)
        cli = 0
        grandchild: Proc | None = None
        for envelope in handle.stream(timeout_s=60):
            if envelope.type is EventType.STARTED:
                cli = d.learn(int(envelope.data["pid"]), handle.run_id).pid
            for text in envelope_texts(envelope):
                if match := _GRANDCHILD_RE.fullmatch(text):
                    grandchild = d.learn(int(match.group(1)), handle.run_id)
            if grandchild:
                break
        stat = read_stat(cli)
        assert stat is not None
        horse = stat.ppid
        d.server.stop()
        os.kill(horse, signal.SIGKILL)
        exited = _await(lambda: worker.poll() is not None, 10.0)
        d.server.start()
        if exited:
            raise WorkerQuit(f"the worker exited ({worker.returncode}) while Redis was away")
        assert handle.wait(timeout_s=30).status in ALLOWED_STATUSES
        again = d.client.submit(session_id="horse", prompt="FAKE: slow n=1 delay_ms=10")
        assert again.wait(timeout_s=30).status == "succeeded"


class _RunStartsAfterSnapshot:
    """Stands in for the Redis client of kill_orphans: right after the `running` hash
    has been read, a run is claimed and its CLI spawned (the interleaving the chaos
    test met: a worker's own sweep killed the run it had just started)."""

    def __init__(self, real: redis.Redis, start: Callable[[], None]) -> None:
        self._real = real
        self._start = start

    def hgetall(self, name: str) -> object:
        snapshot = self._real.hgetall(name)
        self._start()
        return snapshot

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)  # every other read (e.g. warm trees) as is


@pytest.mark.slow
def test_the_orphan_sweep_spares_a_run_that_starts_during_it(
    settings: Settings, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")  # own scope: the sweep sees only our process
    server.start()
    own = settings.model_copy(update={"redis_url": SecretStr(server.url)})
    client = Client(own)
    run_id = uuid.uuid4().hex
    cli: list[subprocess.Popen[bytes]] = []

    def claim_and_spawn() -> None:
        client.redis.hset(client.keys.running, run_id, "orphans")
        env = {**os.environ, RUN_MARKER_ENV: run_id, SCOPE_MARKER_ENV: own.scope}
        cli.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env))
        assert _await(lambda: run_id in marked_runs(own.scope), 10.0)  # exec'd, marked

    try:
        sweeper = cast(redis.Redis, _RunStartsAfterSnapshot(client.redis, claim_and_spawn))
        killed = kill_orphans(RunStore(sweeper, own))
        assert client.redis.hexists(client.keys.running, run_id)  # the run is running
        if killed or cli[0].poll() is not None:
            raise KilledAsOrphan(f"the sweep killed {killed} process(es) of a running run")
    finally:
        for proc in cli:
            proc.kill()
            proc.wait()
        client.close()
        server.stop()
