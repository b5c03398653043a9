"""Cancellation that always works: real Redis, real workers, the fake CLI.

Processes are judged by the process table (/proc), never by flags. A pid is
remembered together with its start time, so a recycled pid is never mistaken
for the process we saw (and is never killed by the cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer.aio import AsyncClient
from producer.cancelling import CancelOutcome
from producer.client import Client, RunHandle
from shared.control import CancelRequest
from shared.events import Envelope, EventType
from shared.keys import keys_from
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.helpers import Proc, envelope_texts
from worker.proctree import read_stat, run_processes, start_ticks

STREAM_TIMEOUT_S = 60.0
CANCEL_TIMEOUT_S = 30.0
GRANDCHILD = "FAKE: grandchild seconds=300"
_GRANDCHILD_RE = re.compile(r"grandchild_pid=(\d+)")


# -- processes --------------------------------------------------------------------


@dataclass(slots=True)
class Pids:
    """Every pid a test learned; all are SIGKILLed when the test ends, pass or fail."""

    known: list[Proc] = field(default_factory=list)

    def learn(self, pid: int) -> Proc:
        proc = Proc(pid, start_ticks(pid))
        self.known.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.known:
            proc.kill()


@pytest.fixture
def pids() -> Iterator[Pids]:
    jar = Pids()
    try:
        yield jar
    finally:
        jar.kill_all()


# -- events -----------------------------------------------------------------------


def _grandchild_pid(envelope: Envelope) -> int | None:
    for text in envelope_texts(envelope):
        if match := _GRANDCHILD_RE.fullmatch(text):
            return int(match.group(1))
    return None


def _types(events: list[Envelope]) -> list[EventType | str]:
    return [e.type for e in events]


def _contiguous(events: list[Envelope]) -> bool:
    return [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))


def _of_run(client: Client, session_id: str, run_id: str) -> list[Envelope]:
    return [e for e in client.history(session_id) if e.run_id == run_id]


def _finished_statuses(events: list[Envelope]) -> list[str]:
    return [str(e.data["status"]) for e in events if e.type is EventType.FINISHED]


@dataclass(slots=True)
class Observed:
    """What a run's stream showed, and the process table at its `finished` event."""

    events: list[Envelope] = field(default_factory=list)
    cli: Proc | None = None
    grandchild: Proc | None = None
    worker: str | None = None
    alive_at_finish: list[Proc] = field(default_factory=list)

    @property
    def finished(self) -> Envelope:
        assert self.events and self.events[-1].type is EventType.FINISHED, _types(self.events)
        return self.events[-1]


def _observe(envelope: Envelope, seen: Observed, pids: Pids) -> None:
    """Record one event; at `finished`, note which learned processes are still alive."""
    seen.events.append(envelope)
    if envelope.type is EventType.STARTED:
        seen.cli = pids.learn(int(envelope.data["pid"]))
        seen.worker = str(envelope.data["worker"])
    elif (pid := _grandchild_pid(envelope)) is not None and seen.grandchild is None:
        seen.grandchild = pids.learn(pid)
    elif envelope.type is EventType.FINISHED:
        # The worker kills the whole tree *before* it publishes `finished`.
        seen.alive_at_finish = [p for p in (seen.cli, seen.grandchild) if p and p.alive()]


def _follow_until(
    stream: Iterator[Envelope], seen: Observed, pids: Pids, until: EventType | str
) -> None:
    """Consume `stream` up to the first `until` event ("grandchild": its pid message)."""
    for envelope in stream:
        _observe(envelope, seen, pids)
        if until == "grandchild" and seen.grandchild is not None:
            return
        if until is envelope.type:
            return
    raise AssertionError(f"stream ended before {until}: {_types(seen.events)}")


def _follow_to_end(stream: Iterator[Envelope], seen: Observed, pids: Pids) -> None:
    for envelope in stream:
        _observe(envelope, seen, pids)


def _assert_tree_running(seen: Observed) -> None:
    """Precondition: the CLI and its setsid grandchild really run, in different sessions."""
    assert seen.cli is not None and seen.grandchild is not None
    assert seen.cli.alive(), "the CLI should be running before the cancel"
    assert seen.grandchild.alive(), "the grandchild should be running before the cancel"
    assert os.getsid(seen.grandchild.pid) != os.getsid(seen.cli.pid)


def _assert_interrupted_end(seen: Observed) -> None:
    types = _types(seen.events)
    assert types[0] is EventType.QUEUED
    assert types[-2:] == [EventType.INTERRUPTED, EventType.FINISHED], types
    assert types.count(EventType.FINISHED) == 1
    assert seen.finished.data["status"] == "interrupted"
    assert _contiguous(seen.events)
    assert seen.alive_at_finish == [], f"alive after finished: {seen.alive_at_finish}"


# -- tests ------------------------------------------------------------------------


def test_cancel_running_kills_cli_and_setsid_grandchild(
    client: Client, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker()
    handle = client.submit(session_id="cancel-running", prompt=GRANDCHILD)
    seen = Observed()
    stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream, seen, pids, "grandchild")
    _assert_tree_running(seen)

    result = handle.cancel(wait=True, timeout_s=CANCEL_TIMEOUT_S)
    _follow_to_end(stream, seen, pids)

    assert result.outcome is CancelOutcome.CANCELLED_RUNNING
    assert result.run_id == handle.run_id
    _assert_interrupted_end(seen)
    logged = _of_run(client, handle.session_id, handle.run_id)
    assert _finished_statuses(logged) == ["interrupted"]
    assert run_processes(handle.run_id) == set()


def test_cancel_queued_run_never_starts_and_session_goes_on(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    pids: Pids,
    tmp_path: Path,
) -> None:
    marker = f"never-run-{uuid.uuid4().hex}"
    cancelled = client.submit(session_id="cancel-queued", prompt=f"FAKE: hang\n{marker}")
    result = client.cancel("cancel-queued")
    assert result.outcome is CancelOutcome.CANCELLED_QUEUED
    assert result.run_id == cancelled.run_id
    logged = _of_run(client, "cancel-queued", cancelled.run_id)
    assert _types(logged) == [EventType.QUEUED, EventType.INTERRUPTED, EventType.FINISHED]
    assert _finished_statuses(logged) == ["interrupted"]

    argv_log = tmp_path / "argv.jsonl"
    start_worker(
        env={"FAKE_CLAUDE_ARGV_LOG": str(argv_log)},
        settings_override=settings.model_copy(
            update={"cli_env_passthrough": ("FAKE_CLAUDE_ARGV_LOG",)}
        ),
    )
    later = client.submit(session_id="cancel-queued", prompt="after the cancel")
    seen = Observed()
    _follow_to_end(later.stream(timeout_s=STREAM_TIMEOUT_S), seen, pids)
    assert seen.finished.data["status"] == "succeeded"
    assert seen.alive_at_finish == []

    # The cancelled job left the RQ queue at once, recorded canceled: no worker took it.
    assert _of_run(client, "cancel-queued", cancelled.run_id) == logged
    job = Job.fetch(cancelled.run_id, connection=client.redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.CANCELED
    assert job.worker_name is None
    # The fake CLI ran exactly once, for the later run only.
    prompts = [json.loads(line)["stdin"] for line in argv_log.read_text().splitlines()]
    assert not any(marker in (p or "") for p in prompts), prompts
    assert prompts == ["after the cancel"]


def _await_claim(client: Client, handle: RunHandle) -> None:
    """Return as soon as a worker has claimed the run (record no longer `queued`).

    The claim comes before the listener subscribes and before the CLI is spawned,
    so a cancel sent now races the spawn.
    """
    key = client.keys.run(handle.session_id, handle.run_id)
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    while client.redis.hget(key, "status") == b"queued":  # no sleep: the window is short
        if time.monotonic() > deadline:
            raise AssertionError("no worker claimed the run")


def test_cancel_racing_the_spawn_always_ends_interrupted(
    client: Client, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker()
    outcomes: list[CancelOutcome] = []
    for attempt in range(6):
        handle = client.submit(session_id="cancel-race", prompt=GRANDCHILD)
        if attempt % 2:
            _await_claim(client, handle)
        result = handle.cancel(wait=False)  # queued, claimed or spawned: whichever it is now
        outcomes.append(result.outcome)
        seen = Observed()
        _follow_to_end(handle.stream(timeout_s=STREAM_TIMEOUT_S), seen, pids)

        logged = _of_run(client, handle.session_id, handle.run_id)
        expected = (
            "succeeded" if result.outcome is CancelOutcome.ALREADY_FINISHED else "interrupted"
        )
        assert _finished_statuses(logged) == [expected], (result.outcome, _types(logged))
        assert seen.finished.data["status"] == expected
        assert _contiguous(seen.events)
        assert seen.alive_at_finish == [], (result.outcome, seen.alive_at_finish)
        if result.outcome is CancelOutcome.CANCELLED_QUEUED:
            assert EventType.STARTED not in _types(logged)
        else:
            assert result.outcome is CancelOutcome.CANCELLED_RUNNING, result.outcome
        # Nothing carrying the run's marker survives, even a grandchild we never heard of.
        assert run_processes(handle.run_id) == set()
    assert [p for p in pids.known if p.alive()] == []
    # The claimed attempts really were running when cancelled.
    assert outcomes[1::2] == [CancelOutcome.CANCELLED_RUNNING] * 3, outcomes


def test_cancel_after_finish_is_already_finished_and_logs_nothing(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="cancel-late", prompt="done quickly")
    assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"
    before = client.history("cancel-late")

    assert handle.cancel().outcome is CancelOutcome.ALREADY_FINISHED
    assert handle.cancel(wait=True, timeout_s=5).outcome is CancelOutcome.ALREADY_FINISHED
    assert client.history("cancel-late") == before
    assert _finished_statuses(_of_run(client, "cancel-late", handle.run_id)) == ["succeeded"]


def test_double_cancel_is_harmless(client: Client, start_worker: WorkerFactory, pids: Pids) -> None:
    start_worker()
    handle = client.submit(session_id="cancel-twice", prompt=GRANDCHILD)
    seen = Observed()
    stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream, seen, pids, "grandchild")
    _assert_tree_running(seen)

    first = handle.cancel(wait=False)
    second = handle.cancel(wait=True, timeout_s=CANCEL_TIMEOUT_S)
    _follow_to_end(stream, seen, pids)

    assert first.outcome is CancelOutcome.CANCELLED_RUNNING
    assert second.outcome in (CancelOutcome.CANCELLED_RUNNING, CancelOutcome.ALREADY_FINISHED)
    _assert_interrupted_end(seen)
    after_two = client.history("cancel-twice")
    assert handle.cancel(wait=True, timeout_s=5).outcome is CancelOutcome.ALREADY_FINISHED
    assert client.history("cancel-twice") == after_two
    logged = _of_run(client, "cancel-twice", handle.run_id)
    assert _finished_statuses(logged) == ["interrupted"]
    assert _types(logged).count(EventType.INTERRUPTED) == 1


def test_cancel_of_unknown_run_or_idle_session_touches_nothing(
    client: Client, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker()
    handle = client.submit(session_id="cancel-bystander", prompt="FAKE: slow n=5 delay_ms=100")
    seen = Observed()
    stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream, seen, pids, EventType.STARTED)

    bogus = uuid.uuid4().hex
    for session_id in ("cancel-bystander", "cancel-idle"):
        result = client.cancel(session_id, run_id=bogus)
        assert result.outcome is CancelOutcome.NOTHING_TO_CANCEL
        assert client.cancel(session_id, run_id=bogus, wait=True).outcome is (
            CancelOutcome.NOTHING_TO_CANCEL
        )
    assert client.cancel("cancel-idle").outcome is CancelOutcome.NOTHING_TO_CANCEL
    assert client.cancel("cancel-idle", wait=True).outcome is CancelOutcome.NOTHING_TO_CANCEL
    assert client.history("cancel-idle") == []

    _follow_to_end(stream, seen, pids)
    assert seen.finished.data["status"] == "succeeded"
    assert EventType.INTERRUPTED not in _types(seen.events)
    texts = [t for e in seen.events for t in envelope_texts(e)]
    assert [t for t in texts if t.startswith("slow ")] == [f"slow {i}/5" for i in range(1, 6)]
    assert _contiguous(seen.events)


def _ignored_control_reasons(log_file: Path) -> list[str]:
    reasons = []
    for line in log_file.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "control_message_ignored":
                reasons.append(str(entry.get("reason")))
    return reasons


def test_control_message_naming_a_foreign_pid_kills_nothing(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    pids: Pids,
    tmp_path: Path,
) -> None:
    start_worker("wctl")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        victim_proc = pids.learn(victim.pid)
        handle = client.submit(session_id="cancel-foreign", prompt="FAKE: slow n=20 delay_ms=100")
        seen = Observed()
        stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
        _follow_until(stream, seen, pids, EventType.STARTED)

        channel = keys_from(settings).control("cancel-foreign", handle.run_id)
        messages = [
            CancelRequest(
                session_id="cancel-foreign", run_id=handle.run_id, pid=victim.pid
            ).model_dump_json(),
            "{this is not json",
            CancelRequest(session_id="cancel-foreign", run_id=uuid.uuid4().hex).model_dump_json(),
        ]
        for message in messages:
            # Exactly one subscriber: the listener of the worker that owns the run.
            assert redis_client.publish(channel, message) == 1
        _follow_to_end(stream, seen, pids)

        assert victim_proc.alive(), "a control message killed a process the worker never started"
        assert victim.poll() is None
        assert seen.finished.data["status"] == "succeeded"
        assert EventType.INTERRUPTED not in _types(seen.events)
        assert _finished_statuses(_of_run(client, "cancel-foreign", handle.run_id)) == ["succeeded"]
        # The listener handled each message (before its own stop token) and ignored it.
        reasons = _ignored_control_reasons(tmp_path / "wctl.log")
        assert sorted(reasons) == sorted(["pid not ours", "malformed", "other run"]), reasons
    finally:
        victim.kill()
        victim.wait()


def test_control_message_naming_the_runs_own_pid_cancels(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    pids: Pids,
) -> None:
    """Positive control for the test above: the same channel and format do act."""
    start_worker()
    handle = client.submit(session_id="cancel-own-pid", prompt=GRANDCHILD)
    seen = Observed()
    stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream, seen, pids, "grandchild")
    _assert_tree_running(seen)
    assert seen.cli is not None

    channel = keys_from(settings).control("cancel-own-pid", handle.run_id)
    request = CancelRequest(session_id="cancel-own-pid", run_id=handle.run_id, pid=seen.cli.pid)
    assert redis_client.publish(channel, request.model_dump_json()) == 1
    _follow_to_end(stream, seen, pids)
    _assert_interrupted_end(seen)


def test_cancel_reaches_the_worker_that_owns_the_run(
    client: Client, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker("wA")
    run_a = client.submit(session_id="cancel-two-a", prompt="FAKE: sleep seconds=30")
    seen_a = Observed()
    stream_a = run_a.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream_a, seen_a, pids, EventType.STARTED)
    assert seen_a.worker == "wA"
    assert seen_a.cli is not None and seen_a.cli.alive()

    start_worker("wB")  # wA is busy: B can only land on wB
    run_b = client.submit(session_id="cancel-two-b", prompt=GRANDCHILD)
    seen_b = Observed()
    stream_b = run_b.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream_b, seen_b, pids, "grandchild")
    assert seen_b.worker == "wB"
    _assert_tree_running(seen_b)

    result_b = run_b.cancel(wait=True, timeout_s=CANCEL_TIMEOUT_S)
    _follow_to_end(stream_b, seen_b, pids)
    assert result_b.outcome is CancelOutcome.CANCELLED_RUNNING
    _assert_interrupted_end(seen_b)

    # A is untouched: its CLI still runs and its run has not finished.
    assert seen_a.cli.alive()
    assert _finished_statuses(_of_run(client, "cancel-two-a", run_a.run_id)) == []

    result_a = run_a.cancel(wait=True, timeout_s=CANCEL_TIMEOUT_S)
    _follow_to_end(stream_a, seen_a, pids)
    assert result_a.outcome is CancelOutcome.CANCELLED_RUNNING
    assert seen_a.finished.data["status"] == "interrupted"
    assert seen_a.alive_at_finish == []


def test_async_client_cancels_a_running_run(
    settings: Settings, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker()

    async def scenario() -> tuple[CancelOutcome, Observed]:
        seen = Observed()
        outcome: CancelOutcome | None = None
        async with AsyncClient(settings) as aclient:
            handle = await aclient.submit(session_id="cancel-aio", prompt=GRANDCHILD)
            async for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
                _observe(envelope, seen, pids)
                if seen.grandchild is not None and outcome is None:
                    _assert_tree_running(seen)
                    result = await handle.cancel(wait=True, timeout_s=CANCEL_TIMEOUT_S)
                    outcome = result.outcome
        assert outcome is not None, _types(seen.events)
        return outcome, seen

    outcome, seen = asyncio.run(scenario())
    assert outcome is CancelOutcome.CANCELLED_RUNNING
    _assert_interrupted_end(seen)


def test_cli_cancel_prints_json_outcome(
    client: Client, settings: Settings, start_worker: WorkerFactory, pids: Pids
) -> None:
    start_worker()
    handle = client.submit(session_id="cancel-cli", prompt=GRANDCHILD)
    seen = Observed()
    stream = handle.stream(timeout_s=STREAM_TIMEOUT_S)
    _follow_until(stream, seen, pids, "grandchild")
    _assert_tree_running(seen)

    done = subprocess.run(
        [sys.executable, "-m", "producer", "cancel", "cancel-cli", "--json", "--wait"],
        env=worker_env(settings),
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    _follow_to_end(stream, seen, pids)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    printed = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert printed == {
        "outcome": "cancelled_running",
        "session_id": "cancel-cli",
        "run_id": handle.run_id,
    }
    _assert_interrupted_end(seen)


def _started(handle: RunHandle, pids: Pids) -> Observed:
    seen = Observed()
    _follow_until(handle.stream(timeout_s=STREAM_TIMEOUT_S), seen, pids, EventType.STARTED)
    return seen


def test_cancel_with_no_live_owner_is_owner_unreachable(
    client: Client, start_worker: WorkerFactory, pids: Pids
) -> None:
    worker = start_worker()
    worker_proc = pids.learn(worker.pid)
    handle = client.submit(session_id="cancel-orphan", prompt="FAKE: hang")
    seen = _started(handle, pids)
    assert seen.cli is not None and seen.cli.alive()
    cli_stat = read_stat(seen.cli.pid)
    assert cli_stat is not None
    horse = pids.learn(cli_stat.ppid)
    horse_stat = read_stat(horse.pid)
    assert horse_stat is not None and horse_stat.ppid == worker.pid  # fork mode: a work horse

    # The worker first, so it cannot notice its horse die and clean up after it.
    worker_proc.kill()
    worker.wait(timeout=30)
    horse.kill()  # its CLI follows by parent-death signal

    result = client.cancel("cancel-orphan", wait=True, timeout_s=2)
    assert result.outcome is CancelOutcome.OWNER_UNREACHABLE
    assert result.run_id == handle.run_id
    assert _finished_statuses(_of_run(client, "cancel-orphan", handle.run_id)) == []
