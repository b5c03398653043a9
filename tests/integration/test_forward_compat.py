"""Rolling upgrade: events from a newer worker pass through every reader, which keeps going.

"A newer worker" is played by the test: it appends envelopes with the exact script
every writer uses (seq from the session counter, XADD to the log, PUBLISH).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis

from producer.aio import AsyncClient
from producer.client import Client
from shared.connection import subscribe_confirmed
from shared.events import Envelope, ErrorData, EventType, FinishedData, UnknownEventData
from shared.keys import keys_from
from shared.runstore.scripts import _APPEND_FN
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.zygote import shared_zygote

# KEYS: seq, log   ARGV: channel, maxlen, body (the envelope without its `{"seq":N,`)
_NEWER_WORKER_LUA = _APPEND_FN + "return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])"


def newer_events(session_id: str, run_id: str) -> list[dict[str, Any]]:
    """A new type, a known type with new fields (top level and data), a new error code."""
    base = {"session_id": session_id, "run_id": run_id, "ts": time.time()}
    return [
        base
        | {
            "type": "approval_requested",
            "data": {"tool": "Bash", "input": {"command": "rm -rf build"}, "timeout_s": 30},
            "worker_version": "9.0",
        },
        base
        | {
            "type": "text",
            "data": {"text": "from a newer worker", "stream": "stderr"},
            "trace_id": "t-1",
        },
        base
        | {
            "type": "error",
            "data": {"code": "quota_exhausted", "message": "no quota", "detail": {}, "retry_s": 9},
        },
    ]


def append_as_newer_worker(
    connection: redis.Redis, settings: Settings, events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Write these envelopes into their session; returns them as logged, with seq."""
    keys = keys_from(settings)
    script = connection.register_script(_NEWER_WORKER_LUA)
    logged = []
    for event in events:
        session_id = event["session_id"]
        body = json.dumps(event)[1:]  # what follows `{"seq":N,` in a logged envelope
        seq = script(
            keys=[keys.seq(session_id), keys.log(session_id)],
            args=[keys.channel(session_id), settings.event_log_maxlen, body],
        )
        logged.append({"seq": int(seq)} | event)
    return logged


def as_dicts(envelopes: list[Envelope]) -> list[dict[str, Any]]:
    return [json.loads(e.model_dump_json()) for e in envelopes]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return shared_zygote().run(["producer", *args], env=worker_env(settings))


def assert_read_tolerantly(envelopes: list[Envelope]) -> None:
    """typed_data() of the newer events gives their data, unknown parts kept as strings."""
    unknown, text, error = envelopes
    assert unknown.typed_data() == UnknownEventData(
        event_type="approval_requested", data=unknown.data
    )
    assert text.type is EventType.TEXT
    error_data = error.typed_data()
    assert isinstance(error_data, ErrorData)
    assert error_data.code == "quota_exhausted"


def test_sync_stream_passes_newer_events_through_mid_run(
    settings: Settings, client: Client, redis_client: redis.Redis, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(session_id="fc-live", prompt="FAKE: hang")
    seen: list[Envelope] = []
    injected: list[dict[str, Any]] = []
    for envelope in handle.stream(timeout_s=60):
        seen.append(envelope)
        if envelope.type is EventType.INIT:  # the CLI is running: a newer worker chimes in
            events = newer_events(handle.session_id, handle.run_id)
            injected = append_as_newer_worker(redis_client, settings, events)
            client.cancel(handle.session_id, run_id=handle.run_id)
    types = [e.type for e in seen]
    assert types[-2:] == [EventType.INTERRUPTED, EventType.FINISHED]
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    start = types.index(EventType.INIT) + 1
    assert as_dicts(seen[start : start + 3]) == injected
    assert_read_tolerantly(seen[start : start + 3])
    finished = seen[-1].typed_data()
    assert isinstance(finished, FinishedData)
    assert finished.status == "interrupted"


def test_async_stream_passes_newer_events_through(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def scenario() -> tuple[list[Envelope], list[Envelope], list[dict[str, Any]]]:
        async with AsyncClient(settings) as aclient:
            handle = await aclient.submit(session_id="fc-async", prompt="no worker runs this")
            live: list[Envelope] = []
            injected: list[dict[str, Any]] = []
            async for envelope in handle.stream(timeout_s=60):
                live.append(envelope)
                if envelope.type is EventType.QUEUED:
                    events = newer_events(handle.session_id, handle.run_id)
                    injected = append_as_newer_worker(redis_client, settings, events)
                    await aclient.cancel(handle.session_id, run_id=handle.run_id)
            replayed = [e async for e in aclient.stream(handle.session_id, follow=False)]
            return live, replayed, injected

    live, replayed, injected = asyncio.run(scenario())
    assert [e.type for e in live] == [
        EventType.QUEUED,
        "approval_requested",
        EventType.TEXT,
        EventType.ERROR,
        EventType.INTERRUPTED,
        EventType.FINISHED,
    ]
    assert as_dicts(live[1:4]) == injected
    assert replayed == live
    assert_read_tolerantly(live[1:4])


def test_tail_and_history_replay_newer_events_between_runs(
    settings: Settings, client: Client, redis_client: redis.Redis, start_worker: WorkerFactory
) -> None:
    start_worker()
    session_id = "fc-between"
    first = client.submit(session_id=session_id, prompt="FAKE: text text=one")
    assert first.wait(timeout_s=60).status == "succeeded"
    injected = append_as_newer_worker(
        redis_client, settings, newer_events(session_id, uuid.uuid4().hex)
    )
    second = client.submit(session_id=session_id, prompt="FAKE: text text=two")
    assert second.wait(timeout_s=60).status == "succeeded"

    history = client.history(session_id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    seqs = [event["seq"] for event in injected]
    assert [d for d in as_dicts(history) if d["seq"] in seqs] == injected
    assert history[-1].run_id == second.run_id
    assert history[-1].type is EventType.FINISHED

    as_json = _cli(settings, "tail", session_id, "--no-follow", "--json")
    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert lines == as_dicts(history)  # every envelope verbatim, the new ones included

    human = _cli(settings, "tail", session_id, "--no-follow")
    assert human.returncode == 0, human.stderr
    assert "Traceback" not in human.stderr
    assert "approval_requested" in human.stdout
    assert "from a newer worker" in human.stdout
    assert "(quota_exhausted)" in human.stdout
    assert f"run {second.run_id[:8]} succeeded" in human.stdout


@pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "rendered"])
def test_submit_follow_exits_1_for_an_unknown_final_status(
    settings: Settings, redis_client: redis.Redis, json_flag: list[str]
) -> None:
    session_id = "fc-status"
    keys = keys_from(settings)
    pubsub = redis_client.pubsub()
    subscribe_confirmed(pubsub, keys.channel(session_id))
    argv = [sys.executable, "-m", "producer", "submit", "hi", "--session", session_id, "--follow"]
    follow = subprocess.Popen(
        [*argv, *json_flag],
        env=worker_env(settings),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queued = None
        deadline = time.monotonic() + 60
        while queued is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                queued = Envelope.from_json(message["data"])
        assert queued is not None, "the submit never queued its run"
        events = newer_events(session_id, queued.run_id)
        finished = events[0] | {
            "type": "finished",
            "data": {"status": "paused_for_approval", "duration_s": 0.5, "approval_id": "a1"},
        }
        append_as_newer_worker(redis_client, settings, [*events, finished])
        out, err = follow.communicate(timeout=60)
    finally:
        pubsub.close()
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 1, err
    assert "Traceback" not in err
    assert "paused_for_approval" in out
    if json_flag:
        last = json.loads(out.splitlines()[-1])
        assert last["data"] == finished["data"]
