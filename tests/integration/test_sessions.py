"""Sessions across runs and hosts: resume, one run at a time, double-texting, transcripts."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
import redis

from producer.client import Client
from producer.errors import SessionBusy
from shared.events import Envelope, EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory, worker_env
from tests.helpers import kill_if_alive, texts, until_grandchild
from tests.zygote import shared_zygote
from worker.proctree import is_alive


def _turn(events: list[Envelope]) -> int | None:
    for text in texts(events):
        if match := re.fullmatch(r"turn=(\d+)", text):
            return int(match.group(1))
    return None


def _run_on(
    start_worker: WorkerFactory, client: Client, host: str, home: Path, **fields: object
) -> list[Envelope]:
    """One run on a burst worker standing in for `host`, with its own HOME."""
    home.mkdir(exist_ok=True)
    handle = client.submit(**fields)  # type: ignore[arg-type]
    worker = start_worker(host, burst=True, env={"HOME": str(home)})
    events = list(handle.stream(timeout_s=60))
    worker.wait(timeout=60)
    return events


def test_runs_alternate_between_hosts_and_resume_one_conversation(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    hosts = [("hostA", tmp_path / "homeA"), ("hostB", tmp_path / "homeB")]
    conversation: set[str] = set()
    for index in range(4):
        host, home = hosts[index % 2]
        events = _run_on(
            start_worker,
            client,
            host,
            home,
            session_id="roam",
            prompt=f"p{index}",
            cwd=str(workdir),
        )
        finished = events[-1].data
        assert finished["status"] == "succeeded", finished
        assert next(e for e in events if e.type is EventType.STARTED).data["worker"] == host
        conversation.add(str(finished["claude_session_id"]))
        assert _turn(events) == (None if index == 0 else index + 1)
    assert len(conversation) == 1
    info = client.session("roam")
    assert info is not None
    assert info.claude_session_id in conversation
    assert info.transcript_bytes > 0


def test_missing_transcript_fails_clearly_or_starts_fresh(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    first = _run_on(
        start_worker, client, "hA", tmp_path / "hA", session_id="exp", prompt="1", cwd=str(workdir)
    )
    assert first[-1].data["status"] == "succeeded"
    # the stored transcript expires; host B has never seen this conversation
    redis.Redis.from_url(settings.redis_url.get_secret_value()).delete(
        client.keys.transcript("exp")
    )
    failed = _run_on(start_worker, client, "hB", tmp_path / "hB", session_id="exp", prompt="2")
    assert failed[-1].data["status"] == "failed"
    errors = [e.data for e in failed if e.type is EventType.ERROR]
    assert [e["code"] for e in errors] == ["transcript_missing"]
    assert first[-1].data["claude_session_id"] in str(errors[0]["message"])
    assert not any(e.type is EventType.STARTED for e in failed)  # the CLI never ran

    fresh = _run_on(
        start_worker,
        client,
        "hB",
        tmp_path / "hB",
        session_id="exp",
        prompt="3",
        resume_policy="start_fresh",
    )
    assert fresh[-1].data["status"] == "succeeded"
    assert any(e.type is EventType.ERROR and e.data["code"] == "transcript_missing" for e in fresh)
    assert _turn(fresh) is None  # a new conversation
    assert fresh[-1].data["claude_session_id"] != first[-1].data["claude_session_id"]


def test_new_conversation_does_not_resume(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    one = list(client.submit(session_id="nc", prompt="a").stream(timeout_s=60))
    two = list(client.submit(session_id="nc", prompt="b").stream(timeout_s=60))
    three = list(
        client.submit(session_id="nc", prompt="c", new_conversation=True).stream(timeout_s=60)
    )
    assert _turn(two) == 2
    assert _turn(three) is None
    assert one[-1].data["claude_session_id"] == two[-1].data["claude_session_id"]
    assert three[-1].data["claude_session_id"] != one[-1].data["claude_session_id"]


def test_on_busy_reject_queues_nothing(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    busy = client.submit(session_id="rej", prompt="FAKE: grandchild seconds=300")
    cli_pid, grandchild = until_grandchild(busy)
    try:
        before = client.history("rej")
        with pytest.raises(SessionBusy):
            client.submit(session_id="rej", prompt="second", on_busy="reject")
        assert client.history("rej") == before
        assert client.queue.count == 0
    finally:
        client.cancel("rej", wait=True)
        kill_if_alive(cli_pid, grandchild)


def test_on_busy_interrupt_kills_the_old_tree_and_resumes(
    client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    first = client.submit(session_id="int", prompt="FAKE: grandchild seconds=300")
    cli_pid, grandchild = until_grandchild(first)
    try:
        second = client.submit(session_id="int", prompt="next", on_busy="interrupt")
        assert first.wait(timeout_s=60).status == "interrupted"
        assert not is_alive(cli_pid)
        assert not is_alive(grandchild)
        events = list(second.stream(timeout_s=60))
        assert events[-1].data["status"] == "succeeded"
        assert _turn(events) == 2  # resumed the interrupted conversation
    finally:
        kill_if_alive(cli_pid, grandchild)


def test_one_run_at_a_time_in_submit_order_under_concurrent_submitters(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    def submit_many(tag: str) -> None:
        with Client(settings) as own:
            for index in range(4):
                own.submit(session_id="order", prompt=f"{tag}-{index} FAKE: slow n=2 delay_ms=20")

    threads = [threading.Thread(target=submit_many, args=(tag,)) for tag in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    start_worker("w1")
    start_worker("w2")
    events: list[Envelope] = []
    for envelope in client.stream("order", timeout_s=120):
        events.append(envelope)
        if [e.type for e in events].count(EventType.FINISHED) == 12:
            break
    queued_order = [e.run_id for e in events if e.type is EventType.QUEUED]
    started_order = [e.run_id for e in events if e.type is EventType.STARTED]
    assert started_order == queued_order
    # never two runs at once: between a run's started and its finished, no other run speaks
    active: str | None = None
    for envelope in events:
        if envelope.type is EventType.QUEUED:
            continue
        if envelope.type is EventType.STARTED:
            assert active is None
            active = envelope.run_id
        assert envelope.run_id == active
        if envelope.type is EventType.FINISHED:
            active = None
    workers = {e.data["worker"] for e in events if e.type is EventType.STARTED}
    assert workers <= {"w1", "w2"}
    assert all(e.data["status"] == "succeeded" for e in events if e.type is EventType.FINISHED)


def test_delete_refuses_while_busy_and_removes_every_key(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    busy = client.submit(session_id="del", prompt="FAKE: grandchild seconds=300")
    cli_pid, grandchild = until_grandchild(busy)
    raw = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        with pytest.raises(SessionBusy):
            client.delete_session("del")
        assert client.delete_session("del", force=True) > 0
        assert not is_alive(grandchild)
        assert list(raw.scan_iter(match=client.keys.session_pattern("del"))) == []
        assert client.session("del") is None
        assert "del" not in [s.session_id for s in client.sessions()]
    finally:
        kill_if_alive(cli_pid, grandchild)


def test_every_session_key_expires(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    for prompt in ("one", "two"):
        assert (
            client.submit(session_id="ttl", prompt=prompt).wait(timeout_s=60).status == "succeeded"
        )
    client.cancel("ttl", run_id="f" * 32)
    raw = redis.Redis.from_url(settings.redis_url.get_secret_value())
    keys = list(raw.scan_iter(match=client.keys.session_pattern("ttl")))
    assert len(keys) >= 5  # log, seq, state, transcript, run records, ...
    for key in keys:
        ttl = raw.ttl(key)
        assert 0 < ttl <= settings.event_log_ttl_s, key


def test_sessions_cli(settings: Settings, client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    client.submit(session_id="cli-s", prompt="hi").wait(timeout_s=60)
    env = worker_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return shared_zygote().run(["producer", *args], env=env)

    listed = cli("sessions", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["session_id"] for r in rows] == ["cli-s"]
    assert rows[0]["state"] == "idle"
    shown = cli("session", "show", "cli-s", "--json")
    assert json.loads(shown.stdout)["claude_session_id"] == rows[0]["claude_session_id"]
    deleted = cli("session", "delete", "cli-s")
    assert deleted.returncode == 0
    assert cli("session", "show", "cli-s").returncode == 4  # no such session


@pytest.mark.parametrize("policy", ["fail", "start_fresh"])
def test_cli_level_resume_failure(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path, policy: str
) -> None:
    home, workdir = tmp_path / "home", tmp_path / "w"
    workdir.mkdir()
    first = _run_on(
        start_worker, client, "h", home, session_id="cli-rf", prompt="1", cwd=str(workdir)
    )
    conversation = str(first[-1].data["claude_session_id"])
    # A local file the worker takes for a transcript, holding no conversation for the CLI.
    (transcript,) = (home / ".claude" / "projects").glob(f"*/{conversation}.jsonl")
    transcript.write_text("{}\n")
    redis.Redis.from_url(settings.redis_url.get_secret_value()).delete(
        client.keys.transcript("cli-rf")
    )
    failed = _run_on(
        start_worker, client, "h", home, session_id="cli-rf", prompt="2", resume_policy=policy
    )
    assert failed[-1].data["status"] == "failed"
    resume_errors = [e.data for e in failed if e.type is EventType.ERROR]
    assert "resume_failed" in [e["code"] for e in resume_errors]
    third = _run_on(start_worker, client, "h", home, session_id="cli-rf", prompt="3")
    if policy == "start_fresh":  # the session moved on to a new conversation
        assert third[-1].data["status"] == "succeeded"
        assert _turn(third) is None
        assert third[-1].data["claude_session_id"] != conversation
    else:  # the session keeps pointing at the conversation it cannot resume
        assert third[-1].data["status"] == "failed"
