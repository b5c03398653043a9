"""Redis ACL roles on a real Redis: users made from the lines `claude-queue acl` prints.

ACL users are server-wide and this Redis is shared, so every user gets a unique
name and is deleted when its test ends; the default user and others are never touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.aio import AsyncClient
from producer.approvals import AnswerOutcome
from producer.cancelling import CancelOutcome
from producer.cli import main
from producer.client import Client
from producer.errors import SessionBusy
from shared.acl import database_of, script_sha
from shared.events import DecisionReason, EventType, PermissionRequestData
from shared.keys import keys_from
from shared.runstore import Claimed, Decision, RunStore
from shared.runstore.scripts import PUBLISH_LUA
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import kill_if_alive
from worker.proctree import read_stat
from worker.reaper import reap_all

STREAM_TIMEOUT_S = 60.0
_PASSWORD_VAR = "CQTEST_ACL_PASSWORD"

RoleClient = Callable[[str], Client]


def _with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def role_url(settings: Settings, redis_client: redis.Redis) -> Iterator[Callable[[str], str]]:
    """Create an ACL user for a role from `claude-queue acl`'s output; returns its Redis URL."""
    tag = uuid.uuid4().hex[:12]
    created: list[str] = []
    urls: dict[str, str] = {}

    def make(role: str) -> str:
        if role in urls:
            return urls[role]
        user, password = f"cqtest-{tag}-{role}", secrets.token_hex(16)
        env = {
            "CLAUDE_QUEUE_REDIS_URL": settings.redis_url.get_secret_value(),
            "CLAUDE_QUEUE_KEY_PREFIX": settings.key_prefix,
            "CLAUDE_QUEUE_QUEUE_NAME": settings.queue_name,
            _PASSWORD_VAR: password,
        }
        printed = CliRunner().invoke(
            main, ["acl", role, "--user", user, "--password-env", _PASSWORD_VAR], env=env
        )
        assert printed.exit_code == 0, printed.output
        assert password not in printed.output
        words = shlex.split(printed.stdout)
        assert words[:3] == ["ACL", "SETUSER", user]
        created.append(user)  # recorded first: a half-made user is deleted too
        redis_client.execute_command(*words)  # type: ignore[no-untyped-call]
        urls[role] = _with_user(settings.redis_url.get_secret_value(), user, password)
        return urls[role]

    yield make
    if created:
        redis_client.execute_command("ACL", "DELUSER", *created)  # type: ignore[no-untyped-call]


@pytest.fixture
def role_client(settings: Settings, role_url: Callable[[str], str]) -> Iterator[RoleClient]:
    """A Client logged in as the ACL user of a role (same prefix, queue and db)."""
    clients: list[Client] = []

    def make(role: str) -> Client:
        client = Client(settings.model_copy(update={"redis_url": SecretStr(role_url(role))}))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _denied(redis_client: redis.Redis, url: str) -> list[str]:
    """What Redis refused this URL's user (its ACL LOG entries)."""
    user = urlsplit(url).username
    entries = cast(list[dict[str, Any]], redis_client.acl_log(count=1000))
    return [f"{e['context']} {e['object']}" for e in entries if e.get("username") == user]


def _start_acl_worker(
    settings: Settings, role_url: Callable[[str], str], start_worker: WorkerFactory
) -> None:
    start_worker(
        settings_override=settings.model_copy(update={"redis_url": SecretStr(role_url("worker"))})
    )


def test_reader_follows_a_run_live_but_cannot_submit_cancel_or_write(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    _start_acl_worker(settings, role_url, start_worker)
    producer, reader = role_client("producer"), role_client("reader")
    handle = producer.submit(session_id="acl-read", prompt="FAKE: hang")

    seen: list[EventType | str] = []
    for envelope in reader.stream("acl-read", stop_at_finish=True, timeout_s=STREAM_TIMEOUT_S):
        seen.append(envelope.type)
        if envelope.type is not EventType.STARTED:
            continue
        # The run is live now: the reader may watch it, and nothing more.
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.submit(session_id="acl-read", prompt="FAKE: echo")
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.cancel("acl-read", run_id=handle.run_id)
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.cancel("acl-read")
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.redis.xadd(reader.keys.log("acl-read"), {"e": "{}"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.redis.publish(reader.keys.channel("acl-read"), "{}")
        assert redis_client.hget(producer.keys.run("acl-read", handle.run_id), "status") == (
            b"running"
        )
        assert redis_client.llen(f"rq:queue:{settings.queue_name}") == 0
        # Only the producer's cancel ends it; the reader sees the end live.
        assert producer.cancel("acl-read").outcome is CancelOutcome.CANCELLED_RUNNING

    assert seen[:2] == [EventType.QUEUED, EventType.STARTED]
    assert seen[-2:] == [EventType.INTERRUPTED, EventType.FINISHED]
    replayed = reader.history("acl-read")
    assert [e.type for e in replayed] == seen
    assert replayed[-1].data["status"] == "interrupted"


def test_reader_cannot_list_show_or_delete_sessions(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
) -> None:
    _start_acl_worker(settings, role_url, start_worker)
    producer, reader = role_client("producer"), role_client("reader")
    assert producer.submit(session_id="acl-keep", prompt="hi").wait(timeout_s=STREAM_TIMEOUT_S)
    for attempt in (
        lambda: reader.delete_session("acl-keep"),
        lambda: reader.delete_session("acl-keep", force=True),
        reader.sessions,
        lambda: reader.session("acl-keep"),
        reader.status,
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert producer.session("acl-keep") is not None
    assert [e.type for e in reader.history("acl-keep")][-1] is EventType.FINISHED


def test_producer_and_worker_users_run_a_session_end_to_end(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    _start_acl_worker(settings, role_url, start_worker)
    producer = role_client("producer")

    first = producer.submit(session_id="acl-e2e", prompt="FAKE: text text=one")
    assert first.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"
    # The second run resumes: the worker reads the state and transcript it stored.
    second = producer.submit(session_id="acl-e2e", prompt="again", on_busy="reject")
    assert second.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"

    events = producer.history("acl-e2e")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events].count(EventType.FINISHED) == 2
    inits = [e.data for e in events if e.type is EventType.INIT]
    assert inits[0]["claude_session_id"] == inits[1]["claude_session_id"]

    status = producer.status()
    assert status.queued == 0
    assert len(status.workers) == 1
    info = producer.session("acl-e2e")
    assert info is not None
    assert info.state == "idle"
    assert info.claude_session_id == inits[0]["claude_session_id"]
    assert [s.session_id for s in producer.sessions()] == ["acl-e2e"]

    assert producer.delete_session("acl-e2e") > 0
    assert producer.session("acl-e2e") is None
    assert producer.history("acl-e2e") == []
    assert _denied(redis_client, role_url("producer")) == []
    assert _denied(redis_client, role_url("worker")) == []


def test_producer_cancels_interrupts_and_force_deletes(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    _start_acl_worker(settings, role_url, start_worker)
    producer = role_client("producer")

    hung = producer.submit(session_id="acl-cancel", prompt="FAKE: hang")
    for envelope in hung.stream(timeout_s=STREAM_TIMEOUT_S):
        if envelope.type is EventType.STARTED:
            break
    (busy_worker,) = producer.status().workers
    assert busy_worker.current_job == hung.run_id
    with pytest.raises(SessionBusy):
        producer.submit(session_id="acl-cancel", prompt="no", on_busy="reject")
    result = producer.cancel("acl-cancel", wait=True, timeout_s=STREAM_TIMEOUT_S)
    assert result.outcome is CancelOutcome.CANCELLED_RUNNING
    assert hung.wait(timeout_s=STREAM_TIMEOUT_S).status == "interrupted"

    # interrupt: the pending run is cancelled (queued or running), then this one runs.
    producer.submit(session_id="acl-cancel", prompt="FAKE: hang")
    newer = producer.submit(session_id="acl-cancel", prompt="after", on_busy="interrupt")
    assert newer.wait(timeout_s=STREAM_TIMEOUT_S).status == "succeeded"

    producer.submit(session_id="acl-cancel", prompt="FAKE: hang")
    assert producer.delete_session("acl-cancel", force=True) > 0
    assert producer.session("acl-cancel") is None
    assert _denied(redis_client, role_url("producer")) == []
    assert _denied(redis_client, role_url("worker")) == []


def test_a_worker_user_reaps_the_run_of_a_dead_worker(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
) -> None:
    worker_settings = settings.model_copy(update={"redis_url": SecretStr(role_url("worker"))})
    doomed = start_worker("doomed", settings_override=worker_settings)
    handle = role_client("producer").submit(session_id="acl-lost", prompt="FAKE: hang")
    cli_pid = horse = 0
    try:
        for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
            if envelope.type is EventType.STARTED:
                cli_pid = int(envelope.data["pid"])
                break
        stat = read_stat(cli_pid)
        assert stat is not None
        horse = stat.ppid
        os.kill(doomed.pid, signal.SIGKILL)
        os.kill(horse, signal.SIGKILL)
        doomed.wait()
        # Its lease would expire within LEASE_TTL_S; expire it now instead of waiting.
        keys = keys_from(settings)
        assert redis_client.delete(keys.lease("acl-lost")) == 1
        # One reaper pass, as every worker's maintenance thread runs it, as the worker user.
        reaper = redis.Redis.from_url(role_url("worker"))
        try:
            assert reap_all(RunStore(reaper, worker_settings)) == 1
        finally:
            reaper.close()
        assert handle.wait(timeout_s=STREAM_TIMEOUT_S).status == "lost"
        job = Job.fetch(handle.run_id, connection=redis_client, serializer=JSONSerializer)
        assert job.get_status() == "failed"
    finally:
        kill_if_alive(cli_pid, horse)
    assert _denied(redis_client, role_url("worker")) == []


def test_async_reader_replays_and_follows(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    start_worker: WorkerFactory,
) -> None:
    _start_acl_worker(settings, role_url, start_worker)
    handle = role_client("producer").submit(session_id="acl-async", prompt="FAKE: slow n=3")

    async def follow_then_replay() -> tuple[list[EventType | str], list[EventType | str]]:
        reader_settings = settings.model_copy(update={"redis_url": SecretStr(role_url("reader"))})
        async with AsyncClient(reader_settings) as reader:
            live = [
                e.type
                async for e in reader.stream(
                    "acl-async", stop_at_finish=True, run_id=handle.run_id, timeout_s=60
                )
            ]
            return live, [e.type for e in await reader.history("acl-async")]

    live, replayed = asyncio.run(follow_then_replay())
    assert live[-1] is EventType.FINISHED
    assert replayed == live


def _select_other_db(client: redis.Redis, settings: Settings) -> object:
    other = (database_of(settings.redis_url.get_secret_value()) + 1) % 16
    return client.execute_command("SELECT", other)  # type: ignore[no-untyped-call]


def _refused(call: Callable[[], object]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_producer_limits_are_the_documented_ones(
    settings: Settings, role_client: RoleClient, redis_client: redis.Redis
) -> None:
    producer = role_client("producer")
    r, keys, sid = producer.redis, producer.keys, "acl-limits"
    job_key = "rq:job:" + uuid.uuid4().hex
    redis_client.hset(job_key, "data", "someone else's prompt")
    refused: dict[str, Callable[[], object]] = {
        "steal the lease": lambda: r.set(keys.lease(sid), "1"),
        "write the conversation id": lambda: r.hset(keys.session_state(sid), "cwd", "/"),
        "plant a transcript": lambda: r.hset(keys.transcript(sid), "data", b"x"),
        "mark a run as running": lambda: r.hset(keys.running, "r", sid),
        "read another job": lambda: r.hgetall(job_key),
        "read a conversation": lambda: r.hget(keys.transcript(sid), "data"),
        "run its own Lua": lambda: r.eval("return 1", 0),
        "run the worker's fenced publish": lambda: r.evalsha(script_sha(PUBLISH_LUA), 0),
        "enter another database": lambda: _select_other_db(r, settings),
        "flush the database": r.flushdb,
        "flush the script cache": r.script_flush,
        "list the clients": r.client_list,
        "read the configuration": lambda: r.config_get("requirepass"),
        "touch a foreign key": lambda: r.set("not-ours", "1"),
        "publish to RQ's worker channels": lambda: r.publish("rq:pubsub:w0", "{}"),
    }
    assert [what for what, call in refused.items() if not _refused(call)] == []
    # What the producer role must allow, and so cannot prevent (see the README):
    # appending to any session log, publishing on its channel, deleting its lease.
    assert r.xadd(keys.log(sid), {"e": "{}"}, id="7-0") == b"7-0"
    assert r.publish(keys.channel(sid), "{}") == 0
    redis_client.set(keys.lease(sid), "1")
    assert r.unlink(keys.lease(sid)) == 1
    # A transcript's size is all a producer may learn of it.
    redis_client.hset(keys.transcript(sid), "data", b"12345")
    assert r.hstrlen(keys.transcript(sid), "data") == 5


def test_worker_user_is_confined_to_its_prefixes(
    settings: Settings, role_url: Callable[[str], str]
) -> None:
    worker = redis.Redis.from_url(role_url("worker"))
    try:
        refused: dict[str, Callable[[], object]] = {
            "flush the database": worker.flushdb,
            "list every key": lambda: worker.keys("*"),
            "touch a foreign key": lambda: worker.set("not-ours", "1"),
            "enter another database": lambda: _select_other_db(worker, settings),
            "read the configuration": lambda: worker.config_get("requirepass"),
            "manage users": worker.acl_list,
            "flush the functions": worker.function_flush,
        }
        assert [what for what, call in refused.items() if not _refused(call)] == []
        assert worker.set(f"{settings.key_prefix}:probe", "1")
        assert worker.set("rq:probe", "1")
    finally:
        worker.close()


def test_permission_requests_under_the_three_roles(
    settings: Settings,
    role_url: Callable[[str], str],
    role_client: RoleClient,
    redis_client: redis.Redis,
) -> None:
    """The worker records and times out requests, the producer lists and answers them,
    the reader may only list them; nobody may write a decision around the script."""
    producer, reader = role_client("producer"), role_client("reader")
    worker_redis = redis.Redis.from_url(role_url("worker"))
    try:
        worker = RunStore(worker_redis, settings)
        handle = producer.submit(session_id="acl-ask", prompt="p", profile="ask")
        assert isinstance(worker.claim("acl-ask", handle.run_id, worker="w", host="h"), Claimed)
        for request_id in ("r1", "r2", "r3"):
            request = PermissionRequestData(
                request_id=request_id, tool_name="Bash", expires_at=time.time() + 600
            )
            worker.open_request("acl-ask", handle.run_id, request)  # HSET + EXPIRE
        listed = [o.request.request_id for o in reader.open_requests("acl-ask")]
        assert listed == ["r1", "r2", "r3"]
        assert producer.open_requests("acl-ask") == reader.open_requests("acl-ask")

        assert producer.respond("acl-ask", "r1", allow=True, decided_by="p").delivered
        again = producer.respond("acl-ask", "r1", allow=False)
        assert again.outcome is AnswerOutcome.ALREADY_DECIDED
        timed_out = Decision(behavior="deny", reason=DecisionReason.TIMED_OUT)
        decided = worker.decide("acl-ask", handle.run_id, "r2", timed_out, notify=False)
        assert decided is AnswerOutcome.DELIVERED
        assert worker.decisions("acl-ask", handle.run_id, ["r1", "r2"]) == {  # HMGET
            "r1": Decision(behavior="allow", decided_by="p"),
            "r2": timed_out,
        }
        assert producer.cancel("acl-ask", grace_s=3.0).outcome is CancelOutcome.CANCELLED_RUNNING
        assert worker.cancel_requested("acl-ask", handle.run_id) == 3.0
        assert _denied(redis_client, role_url("producer")) == []
        assert _denied(redis_client, role_url("worker")) == []

        approvals = producer.keys.approvals("acl-ask", handle.run_id)
        forged = Decision(behavior="allow", decided_by="forger").model_dump_json()
        refused: dict[str, Callable[[], object]] = {
            "reader answers": lambda: reader.respond("acl-ask", "r3", allow=True),
            "reader writes a decision": lambda: reader.redis.hsetnx(approvals, "r3:decision", "x"),
            "producer overwrites a decision": lambda: producer.redis.hset(
                approvals, "r2:decision", forged
            ),
            "producer deletes a request": lambda: producer.redis.hdel(approvals, "r3"),
        }
        assert [what for what, call in refused.items() if not _refused(call)] == []
        assert worker.decisions("acl-ask", handle.run_id, ["r2", "r3"]) == {"r2": timed_out}
    finally:
        worker_redis.close()
