"""Opt-in retries: a lost run (retry_lost) or one failed by an overloaded or rate-limited
API (retry_on) is submitted again as a new run of its session that resumes the
conversation; its `queued` names the run it retries; one retry per ended run."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from producer.client import Client, RunHandle
from shared.events import Envelope, EventType, RunStatus
from shared.jobs import PromptJob, RunRequest
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory
from tests.helpers import texts
from tests.integration.test_acl import RoleClient, role_client, role_url  # noqa: F401
from tests.scheduling.support import first, queued_data, run_events
from worker.outcome import RunObservations
from worker.parser import parse_line
from worker.retries import resubmit, retry_job, stored_request

FAULTY_CLI = REPO / "tests" / "fakecli" / "faults.py"


@pytest.fixture
def retrying(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "claude_bin": str(FAULTY_CLI),
            "lease_ttl_s": 2.0,
            "lease_renew_s": 0.5,
            "reaper_interval_s": 0.5,
            "retry_first_s": 0.2,
            "retry_max_s": 0.5,
        }
    )


def _start(
    start_worker: WorkerFactory, settings: Settings, count: int
) -> dict[str, subprocess.Popen[bytes]]:
    return {f"w{i}": start_worker(f"w{i}", settings_override=settings) for i in range(count)}


def _doomed_worker(start_worker: WorkerFactory, settings: Settings) -> subprocess.Popen[bytes]:
    """The worker a test SIGKILLs, without RQ's scheduler: RQ forks the scheduler into a
    process of its own, which a SIGKILL of the worker would leave behind (holding the
    scheduler lock and a subscribed connection into later tests)."""
    return start_worker(
        "doomed", settings_override=settings.model_copy(update={"scheduler": False})
    )


def _hanging_on(handle: RunHandle) -> str:
    """The worker of a `hang_once` run, once its CLI hangs (its marker is made)."""
    worker = None
    for envelope in handle.stream(timeout_s=60):
        if envelope.type == "started":
            worker = str(envelope.data["worker"])
        if envelope.type == "message" and "hanging once" in texts([envelope]):
            assert worker is not None
            return worker
    raise AssertionError("the run never hung")


def _retry_of(client: Client, handle: RunHandle) -> RunHandle:
    """The run that retries `handle`, once its `queued` is written (followed, not polled)."""
    for envelope in client.stream(handle.session_id, timeout_s=60):
        if envelope.type == "queued" and envelope.data.get("retry_of") == handle.run_id:
            return RunHandle(client, handle.session_id, envelope.run_id, envelope.seq)
    raise AssertionError("no retry was submitted")


def _retries_in(events: list[Envelope]) -> list[Envelope]:
    return [e for e in events if e.type == "queued" and e.data.get("retry_of")]


def _turn(events: list[Envelope]) -> int | None:
    for text in texts(events):
        if match := re.fullmatch(r"turn=(\d+)", text):
            return int(match.group(1))
    return None


def test_retry_lost_after_a_worker_sigkill_continues_the_conversation(
    client: Client, retrying: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    victim = _doomed_worker(start_worker, retrying)
    opening = client.submit(session_id="s", prompt="remember the word kiwi")
    first_end = opening.wait(timeout_s=60)
    assert first_end.status is RunStatus.SUCCEEDED
    prompt = f"FAKE: hang_once marker={tmp_path / 'hung'}"
    doomed = client.submit(session_id="s", prompt=prompt, retry_lost=1)
    assert _hanging_on(doomed) == "doomed"
    _start(start_worker, retrying, 1)  # the survivor: reaps, schedules and runs the retry
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert doomed.wait(timeout_s=60).status is RunStatus.LOST
    retry = _retry_of(client, doomed)
    end = retry.wait(timeout_s=60)
    assert end.status is RunStatus.SUCCEEDED
    # The lost run keeps its own end; the retry names it and resumes the conversation.
    lost_events = run_events(client, doomed)
    assert first(lost_events, EventType.FINISHED).data["status"] == "lost"
    queued = queued_data(client, retry)
    assert queued["retry_of"] == doomed.run_id
    assert queued["attempt"] == 1
    retry_events = run_events(client, retry)
    assert end.claude_session_id == first_end.claude_session_id
    turn = _turn(retry_events)
    assert turn is not None and turn >= 2
    assert f"ECHO:{prompt}" in texts(retry_events)
    # retry_lost=1: one retry, and the session has nothing left to run.
    assert len(_retries_in(client.history("s"))) == 1
    assert client.store.pending_runs("s") == []


def test_a_lost_run_without_retry_lost_is_not_submitted_again(
    client: Client, retrying: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    victim = _doomed_worker(start_worker, retrying)
    doomed = client.submit(session_id="n", prompt=f"FAKE: hang_once marker={tmp_path / 'm'}")
    assert _hanging_on(doomed) == "doomed"
    _start(start_worker, retrying, 1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert doomed.wait(timeout_s=60).status is RunStatus.LOST
    # A later run of the session goes through the same survivor: had a retry been
    # submitted, it would have been queued before this one.
    after = client.submit(session_id="n", prompt="hello")
    assert after.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert _retries_in(client.history("n")) == []


@pytest.mark.parametrize(("status", "cause"), [(529, "overloaded"), (429, "rate_limited")])
def test_retry_on_an_api_error_submits_the_run_again(
    client: Client,
    retrying: Settings,
    start_worker: WorkerFactory,
    tmp_path: Path,
    status: int,
    cause: str,
) -> None:
    _start(start_worker, retrying, 1)
    prompt = f"FAKE: api_error status={status} marker={tmp_path / 'm'}"
    failed = client.submit(session_id="api", prompt=prompt, retry_on=[cause])
    assert failed.wait(timeout_s=60).status is RunStatus.FAILED
    events = run_events(client, failed)
    assert [e.data["error_status"] for e in events if e.type == "retry"] == [status, status]
    retry = _retry_of(client, failed)
    end = retry.wait(timeout_s=60)
    assert end.status is RunStatus.SUCCEEDED
    assert queued_data(client, retry)["attempt"] == 1
    assert f"ECHO:{prompt}" in texts(run_events(client, retry))


def test_retry_on_ignores_errors_it_does_not_name(
    client: Client, retrying: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    _start(start_worker, retrying, 1)
    prompt = f"FAKE: api_error status=429 marker={tmp_path / 'm'}"
    failed = client.submit(session_id="other", prompt=prompt, retry_on=["overloaded"])
    assert failed.wait(timeout_s=60).status is RunStatus.FAILED
    after = client.submit(session_id="other", prompt="hello")
    assert after.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert _retries_in(client.history("other")) == []


def test_retry_on_stops_after_retry_on_max(
    client: Client, retrying: Settings, start_worker: WorkerFactory
) -> None:
    capped = retrying.model_copy(update={"retry_on_max": 2})
    _start(start_worker, capped, 1)
    # No marker: every attempt fails the same way.
    failed = client.submit(session_id="cap", prompt="FAKE: api_error", retry_on=["overloaded"])
    second = _retry_of(client, failed)
    third = _retry_of(client, second)
    assert third.wait(timeout_s=60).status is RunStatus.FAILED
    assert queued_data(client, third)["attempt"] == 2
    after = client.submit(session_id="cap", prompt="hello")
    assert after.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert len(_retries_in(client.history("cap"))) == 2


def test_two_reapers_retrying_one_run_submit_one_retry(retrying: Settings) -> None:
    job = PromptJob(session_id="race", prompt="hello", retry_lost=3)
    request = RunRequest(run_id="a" * 32, submitted_at=0.0, job=job)
    results: list[str | None] = []
    barrier = threading.Barrier(4)

    def reap() -> None:
        with Client(retrying) as own:
            store = RunStore(own.redis, retrying)
            barrier.wait()
            results.append(resubmit(store, request, "lost"))

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = [r for r in results if r is not None]
    assert len(submitted) == 1
    with Client(retrying) as client:
        assert client.store.pending_runs("race") == submitted


def test_the_retry_waits_a_backoff_that_grows_with_its_attempt(retrying: Settings) -> None:
    job = PromptJob(session_id="b", prompt="hello", run_at=None, delay_s=5, retry_lost=9)
    waits = []
    for attempt in range(5):
        request = RunRequest(run_id="b" * 32, submitted_at=0.0, job=job, attempt=attempt)
        retried = retry_job(request, retrying, lambda: 0.0)  # no jitter: the cap itself
        assert retried.run_at is None
        waits.append(retried.delay_s)
    assert waits == [0.2, 0.4, 0.5, 0.5, 0.5]


def test_a_worker_acl_user_submits_the_retry(
    client: Client,
    role_client: RoleClient,  # noqa: F811
) -> None:
    lost = client.submit(session_id="acl", prompt="hello", retry_lost=1)
    worker = role_client("worker")
    request = stored_request(worker.store, "acl", lost.run_id)
    assert request is not None and request.job.retry_lost == 1
    retry = resubmit(worker.store, request, "lost")
    assert retry is not None
    assert resubmit(worker.store, request, "lost") is None  # once
    assert client.store.pending_runs("acl") == [lost.run_id, retry]


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        ("error-529", "overloaded"),
        ("error-529-retried", "overloaded"),
        ("error-429", "rate_limited"),
        ("error-500", None),
        ("error-401", None),
        ("text", None),
    ],
)
def test_the_real_clis_give_up_lines_are_classified(capture: str, expected: str | None) -> None:
    """Captures of the real CLI (tests/fixtures/cli) through the parser: what retry_on sees."""
    seen = RunObservations()
    for raw in (REPO / "tests" / "fixtures" / "cli" / f"{capture}.jsonl").read_bytes().splitlines():
        for event in parse_line(raw).events:
            seen.observe(event)
    assert seen.api_error == expected
