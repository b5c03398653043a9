"""Warm sessions with the fake CLI on real simple-mode workers: a session's next run
reuses its live CLI, and anything that makes that unsafe sends the run cold."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

import redis

from producer.client import Client
from shared.events import Envelope, EventType, RunStatus
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import kill_if_alive, texts, until_grandchild
from worker.proctree import is_alive
from worker.reaper import kill_orphans

STREAM_TIMEOUT_S = 60.0


def _run(client: Client, session_id: str, prompt: str, **fields: object) -> list[Envelope]:
    handle = client.submit(session_id=session_id, prompt=prompt, **fields)  # type: ignore[arg-type]
    events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
    assert events[-1].type is EventType.FINISHED, [e.type for e in events]
    assert {e.run_id for e in events} == {handle.run_id}
    return events


def _started(events: list[Envelope]) -> dict[str, object]:
    (started,) = [e.data for e in events if e.type is EventType.STARTED]
    return started


def _status(events: list[Envelope]) -> object:
    return events[-1].data["status"]


def test_ten_runs_of_a_session_share_one_warm_cli(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker("warm1", mode="simple")
    workdir = tmp_path / "work"
    workdir.mkdir()
    runs = [_run(client, "chat", f"prompt {i}", cwd=str(workdir)) for i in range(10)]
    started = [_started(events) for events in runs]
    assert [s["warm"] for s in started] == [False] + [True] * 9, started
    assert len({s["pid"] for s in started}) == 1, started
    assert all(_status(events) == RunStatus.SUCCEEDED for events in runs)
    # Every run left the CLI running for the next one: no exit code, kept warm.
    assert [(e[-1].data["exit_code"], e[-1].data["kept_warm"]) for e in runs] == [(None, True)] * 10
    seqs = [e.seq for events in runs for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    # Each run got its own answer: the echo of its own prompt, nothing of another's.
    for index, events in enumerate(runs):
        echoes = [t for t in texts(events) if t.startswith("ECHO:")]
        assert echoes == [f"ECHO:prompt {index}"], echoes
    # The warm CLI holds one conversation: every run names the same one.
    conversations = {events[-1].data["claude_session_id"] for events in runs}
    assert len(conversations) == 1 and None not in conversations


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Block until the process exits (its pidfd turns readable), at most timeout_s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        assert ready, f"process {pid} still alive after {timeout_s} s"
    finally:
        os.close(fd)


def _turn_of(events: list[Envelope]) -> str | None:
    return next((t for t in texts(events) if t.startswith("turn=")), None)


def test_changed_parameters_send_the_run_cold_and_close_the_warm_cli(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker("warm1", mode="simple")
    first = _run(client, "chat", "one")
    second = _run(client, "chat", "two", model="claude-other-model")
    assert _started(second)["warm"] is False
    assert _started(second)["cold_reason"] == "mismatch"
    _wait_gone(int(str(_started(first)["pid"])))  # closed, never reused
    assert _turn_of(second) == "turn=2"  # resumed from the transcript instead
    third = _run(client, "chat", "three", model="claude-other-model")
    assert _started(third)["warm"] is True
    assert _started(third)["pid"] == _started(second)["pid"]


def test_an_idle_warm_cli_expires_after_warm_idle_s(
    client: Client, start_worker: WorkerFactory, settings: Settings
) -> None:
    quick = settings.model_copy(update={"warm_idle_s": 0.5, "reaper_interval_s": 0.2})
    start_worker("warm1", mode="simple", settings_override=quick)
    first = _run(client, "chat", "one")
    _wait_gone(int(str(_started(first)["pid"])))
    second = _run(client, "chat", "two")
    assert (_started(second)["warm"], _started(second)["cold_reason"]) == (False, "expired")
    assert _turn_of(second) == "turn=2"


def test_a_warm_cli_killed_between_runs_means_a_cold_resume(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker("warm1", mode="simple")
    first = _run(client, "chat", "one")
    pid = int(str(_started(first)["pid"]))
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    second = _run(client, "chat", "two")
    assert _started(second)["warm"] is False
    assert _started(second)["pid"] != pid
    assert _status(second) == RunStatus.SUCCEEDED
    assert _turn_of(second) == "turn=2"


def test_a_cancel_during_a_warm_turn_kills_the_whole_tree(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker("warm1", mode="simple")
    first = _run(client, "chat", "one")
    handle = client.submit(session_id="chat", prompt="FAKE: grandchild seconds=300")
    cli_pid, grandchild = until_grandchild(handle)
    try:
        assert cli_pid == _started(first)["pid"]  # the warm CLI took the run
        assert client.cancel("chat").outcome.value == "cancelled_running"
        events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
        assert events[-1].data["status"] == RunStatus.INTERRUPTED
        _wait_gone(cli_pid)
        _wait_gone(grandchild)
    finally:
        kill_if_alive(cli_pid, grandchild)
    third = _run(client, "chat", "three")
    assert _started(third)["warm"] is False and _started(third)["pid"] != cli_pid


def test_a_killed_worker_leaves_nothing_and_the_session_goes_on_elsewhere(
    client: Client, start_worker: WorkerFactory
) -> None:
    owner = start_worker("warm1", mode="simple")
    first = _run(client, "chat", "one")
    pid = int(str(_started(first)["pid"]))
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    _wait_gone(pid)  # the parent-death signal reached the warm CLI
    start_worker("warm2", mode="simple")
    second = _run(client, "chat", "two")
    assert _started(second)["worker"] == "warm2"
    assert _started(second)["warm"] is False
    assert _turn_of(second) == "turn=2"


def test_a_session_taken_by_another_worker_closes_the_first_workers_warm_cli(
    client: Client, start_worker: WorkerFactory, settings: Settings
) -> None:
    quick = settings.model_copy(update={"reaper_interval_s": 0.2})
    start_worker("warm1", mode="simple", settings_override=quick)
    first = _run(client, "chat", "one")
    warm_pid = int(str(_started(first)["pid"]))
    # warm1 is busy elsewhere, so the session's next run goes to warm2.
    busy = client.submit(session_id="other", prompt="FAKE: sleep seconds=120")
    next(e for e in busy.stream(timeout_s=STREAM_TIMEOUT_S) if e.type is EventType.STARTED)
    second_worker = start_worker("warm2", mode="simple", settings_override=quick)
    second = _run(client, "chat", "two")
    assert (_started(second)["worker"], _started(second)["warm"]) == ("warm2", False)
    assert _turn_of(second) == "turn=2"
    # The session moved on (its fencing token passed warm1's): warm1 closes its CLI.
    _wait_gone(warm_pid)
    client.cancel("other", wait=True)
    second_worker.terminate()
    second_worker.wait(timeout=60)
    third = _run(client, "chat", "three")
    assert _started(third)["worker"] == "warm1"
    assert (_started(third)["warm"], _started(third)["cold_reason"]) == (False, "moved")
    assert _turn_of(third) == "turn=3"  # the conversation includes warm2's turn


def test_a_full_pool_closes_the_least_recently_used_cli(
    client: Client, start_worker: WorkerFactory, settings: Settings
) -> None:
    start_worker(
        "warm1", mode="simple", settings_override=settings.model_copy(update={"warm_max": 1})
    )
    first_a = _run(client, "a", "one")
    _run(client, "b", "one")  # parking b's CLI evicts a's
    _wait_gone(int(str(_started(first_a)["pid"])))
    second_a = _run(client, "a", "two")
    assert (_started(second_a)["warm"], _started(second_a)["cold_reason"]) == (False, "expired")
    third_a = _run(client, "a", "three")
    assert _started(third_a)["warm"] is True


def test_fork_mode_never_keeps_a_cli_warm(client: Client, start_worker: WorkerFactory) -> None:
    start_worker("forker", mode="fork")
    first = _run(client, "chat", "one")
    _wait_gone(int(str(_started(first)["pid"])))
    second = _run(client, "chat", "two")
    assert _started(second)["warm"] is False
    assert _turn_of(second) == "turn=2"


def test_another_workers_orphan_sweep_spares_a_warm_cli(
    client: Client, start_worker: WorkerFactory, settings: Settings, redis_client: redis.Redis
) -> None:
    start_worker("warm1", mode="simple")
    first = _run(client, "chat", "one")
    pid = int(str(_started(first)["pid"]))
    # What any other worker of this deployment on this host does every REAPER_INTERVAL_S.
    store = RunStore(redis_client, settings)
    assert kill_orphans(store) == 0
    assert is_alive(pid)
    second = _run(client, "chat", "two")
    assert _started(second)["warm"] is True and _started(second)["pid"] == pid
    # Without its record the same sweep takes it for a leftover: the record is what spares it.
    redis_client.delete(store.keys.warm_trees)
    assert kill_orphans(store) >= 1
    _wait_gone(pid)
