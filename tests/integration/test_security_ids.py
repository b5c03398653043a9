"""Ids read back from Redis are data, not paths or patterns; deleting a session is exact."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import cast

import pytest
import redis

from producer.aio import AsyncClient
from producer.client import Client
from producer.errors import InvalidJobError
from shared.events import Envelope, EventType
from shared.jobs import PromptJob
from shared.keys import Keys
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory, worker_env
from tests.helpers import texts
from tests.zygote import shared_zygote
from worker import session, transcripts
from worker.reaper import reap_all

BAD_SESSION_IDS = ["*", "?", "[", "\\", "a*", "[ab]", "s1*", "", "../s1", "s 1", "s1\n"]


def _run(client: Client, **fields: object) -> list[Envelope]:
    events = list(client.submit(**fields).stream(timeout_s=60))  # type: ignore[arg-type]
    assert events[-1].type is EventType.FINISHED
    return events


def _codes(events: list[Envelope]) -> list[str]:
    return [str(e.data["code"]) for e in events if e.type is EventType.ERROR]


def _turn(events: list[Envelope]) -> int | None:
    for text in texts(events):
        if match := re.fullmatch(r"turn=(\d+)", text):
            return int(match.group(1))
    return None


def _transcript_file(home: Path, conversation: str) -> Path:
    (path,) = (home / ".claude" / "projects").glob(f"*/{conversation}.jsonl")
    return path


# --------------------------------------------------------------------------- poked conversation ids

TRAVERSAL = "traversal"


@pytest.mark.parametrize("where", ["state", "transcript", "both"])
@pytest.mark.parametrize("poison", [TRAVERSAL, "*"])
def test_poked_conversation_id_fails_or_starts_fresh_and_touches_no_file(
    client: Client,
    settings: Settings,
    redis_client: redis.Redis,
    start_worker: WorkerFactory,
    tmp_path: Path,
    where: str,
    poison: str,
) -> None:
    home, workdir = tmp_path / "home", tmp_path / "w"
    workdir.mkdir()
    home.mkdir()
    start_worker(env={"HOME": str(home)})
    first = _run(client, session_id="target", prompt="t1", cwd=str(workdir))
    assert first[-1].data["status"] == "succeeded"
    # The victim's transcript is written last, so `*` would pick it as the newest copy.
    victim = _run(client, session_id="victim", prompt="v1", cwd=str(workdir))
    victim_file = _transcript_file(home, str(victim[-1].data["claude_session_id"]))
    victim_bytes = victim_file.read_bytes()

    escape_dir = Path("/tmp") / f"cq-evil-{uuid.uuid4().hex}"
    # Enough `..` to reach / from any projects folder, then into /tmp.
    value = "../" * 40 + f"tmp/{escape_dir.name}/evil" if poison == TRAVERSAL else "*"
    keys = Keys(settings.key_prefix)
    if where in ("state", "both"):
        redis_client.hset(keys.session_state("target"), "claude_session_id", value)
    if where in ("transcript", "both"):
        redis_client.hset(keys.transcript("target"), "claude_session_id", value)

    failed = _run(client, session_id="target", prompt="t2")
    assert failed[-1].data["status"] == "failed"
    assert _codes(failed) == ["corrupt_state"]
    (error,) = [e.data for e in failed if e.type is EventType.ERROR]
    assert "corrupt session state" in str(error["message"])
    assert not any(e.type is EventType.STARTED for e in failed)  # the CLI never ran

    fresh = _run(client, session_id="target", prompt="t3", resume_policy="start_fresh")
    assert fresh[-1].data["status"] == "succeeded"
    assert _codes(fresh) == ["corrupt_state"]
    assert "starting a fresh conversation" in str(fresh[_first_error(fresh)].data["message"])
    assert _turn(fresh) is None  # a new conversation
    assert fresh[-1].data["claude_session_id"] != first[-1].data["claude_session_id"]

    # The fresh conversation replaced the bad value: the session resumes normally again.
    healed = _run(client, session_id="target", prompt="t4")
    assert healed[-1].data["status"] == "succeeded"
    assert _turn(healed) == 2

    assert victim_file.read_bytes() == victim_bytes
    assert not escape_dir.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("evil")]


def _first_error(events: list[Envelope]) -> int:
    return next(i for i, e in enumerate(events) if e.type is EventType.ERROR)


@pytest.mark.parametrize("bad_cwd", ["relative/dir", "/srv/\x00repo"])
def test_poked_cwd_is_never_used(
    client: Client,
    settings: Settings,
    redis_client: redis.Redis,
    start_worker: WorkerFactory,
    tmp_path: Path,
    bad_cwd: str,
) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    start_worker(env={"HOME": str(tmp_path / "home")})
    assert _run(client, session_id="cwd", prompt="1", cwd=str(workdir))[-1].data["status"] == (
        "succeeded"
    )
    redis_client.hset(Keys(settings.key_prefix).session_state("cwd"), "cwd", bad_cwd)
    failed = _run(client, session_id="cwd", prompt="2")
    assert failed[-1].data["status"] == "failed"
    assert _codes(failed) == ["corrupt_state"]
    assert "explicit cwd" in str(failed[_first_error(failed)].data["message"])
    # A job naming its cwd does not use the stored one, so it runs.
    named = _run(client, session_id="cwd", prompt="3", cwd=str(workdir))
    assert named[-1].data["status"] == "succeeded"
    assert _turn(named) == 2


# --------------------------------------------------------------------------- worker internals


def _job(**fields: object) -> PromptJob:
    return PromptJob.model_validate({"session_id": "inner", "prompt": "p", **fields})


def test_stored_transcript_data_is_verified_before_it_is_written(
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys, env = Keys(settings.key_prefix), {"HOME": str(tmp_path / "home")}
    conversation = str(uuid.uuid4())
    redis_client.hset(
        keys.session_state("inner"), mapping={"claude_session_id": conversation, "cwd": "/srv/x"}
    )
    monkeypatch.setattr(transcripts, "MAX_INFLATED_BYTES", 1024)
    bodies: dict[str, bytes] = {
        "not zlib": b"not zlib at all",
        "sha256": zlib.compress(b"{}\n"),  # the recorded sha256 below is not its hash
        "inflates": zlib.compress(b"\0" * 4096),
        "truncated": zlib.compress(b"{}\n" * 100)[:-6],
    }
    for problem, data in bodies.items():
        redis_client.hset(
            keys.transcript("inner"),
            mapping={"claude_session_id": conversation, "data": data, "sha256": "0" * 64},
        )
        for policy, attribute in (("fail", "failure"), ("start_fresh", "notice")):
            plan = session.plan_resume(
                redis_client, keys, _job(resume_policy=policy), env, "/default"
            )
            assert plan.resume_id is None, problem
            reported = getattr(plan, attribute)
            assert reported is not None, problem
            assert reported[0] == "corrupt_state", problem
    assert not (tmp_path / "home").exists()  # nothing was written anywhere


@pytest.mark.parametrize("reported", ["*", "../../../../tmp/x", "ABC", "", "c1"])
def test_a_bad_id_reported_by_the_cli_is_not_remembered(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, reported: str
) -> None:
    keys, env = Keys(settings.key_prefix), {"HOME": str(tmp_path / "home")}
    # Another conversation's transcript: `*` used to be globbed straight onto it.
    other = tmp_path / "home" / ".claude" / "projects" / "-srv-x" / f"{uuid.uuid4()}.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text('{"other": true}\n')
    session.remember(
        redis_client,
        keys,
        settings,
        job=_job(),
        run_id="a" * 32,
        cwd="/srv/x",
        claude_session_id=reported,
        env=env,
    )
    assert redis_client.exists(keys.session_state("inner"), keys.transcript("inner")) == 0
    assert other.read_text() == '{"other": true}\n'


def test_reaper_skips_and_drops_bad_ids_read_back(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = Keys(settings.key_prefix)
    redis_client.set(keys.log("s1"), "not a stream")  # would be touched by a forced finish
    redis_client.hset(keys.running, mapping={"*": "s1", "b" * 32: "*"})
    redis_client.hset(keys.waiting, mapping={"../x": "s1", "c" * 32: "[ab]"})
    assert reap_all(RunStore(redis_client, settings)) == 0
    assert redis_client.hlen(keys.running) == 0
    assert redis_client.hlen(keys.waiting) == 0
    assert redis_client.get(keys.log("s1")) == b"not a stream"


def test_listing_skips_bad_index_entries(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    client.submit(session_id="good", prompt="hi")  # queued; no worker needed
    redis_client.zadd(Keys(settings.key_prefix).sessions, {"*": time.time(), "../x": time.time()})
    assert [info.session_id for info in client.sessions()] == ["good"]
    assert redis_client.zrange(Keys(settings.key_prefix).sessions, 0, -1) == [b"good"]


# --------------------------------------------------------------------------- exact deletes


def _session_keys(redis_client: redis.Redis, settings: Settings) -> set[bytes]:
    """Every key that belongs to some session, plus the index and running entries."""
    keys = Keys(settings.key_prefix)
    found = {
        k
        for k in redis_client.scan_iter(count=1000)
        if k.startswith(b"%s:{" % keys.prefix.encode())
    }
    found |= {b"index:" + m for m in cast(list[bytes], redis_client.zrange(keys.sessions, 0, -1))}
    found |= {b"running:" + r for r in cast(list[bytes], redis_client.hkeys(keys.running))}
    return found


def test_delete_refuses_patterns_and_deletes_only_its_own_keys(
    client: Client, settings: Settings, redis_client: redis.Redis, start_worker: WorkerFactory
) -> None:
    start_worker()
    for session_id in ("s1", "s10", "a", "ab", "b"):
        assert client.submit(session_id=session_id, prompt="hi").wait(timeout_s=60).status == (
            "succeeded"
        )
    busy = client.submit(session_id="busy", prompt="FAKE: hang")
    stream = busy.stream(timeout_s=60)
    assert any(e.type is EventType.STARTED for e in stream)  # stops at `started`
    before = _session_keys(redis_client, settings)
    assert any(b"{busy}:lease" in k for k in before)

    for bad in BAD_SESSION_IDS:
        for force in (False, True):
            with pytest.raises(InvalidJobError, match=r"session_id: .* is not a session id"):
                client.delete_session(bad, force=force)
        with pytest.raises(InvalidJobError):
            client.session(bad)

    async def refused_by_async_client() -> None:
        async with AsyncClient(settings) as aclient:
            for bad in BAD_SESSION_IDS:
                with pytest.raises(InvalidJobError):
                    await aclient.delete_session(bad, force=True)

    asyncio.run(refused_by_async_client())
    assert _session_keys(redis_client, settings) == before
    session_info = client.session("busy")
    assert session_info is not None and session_info.state == "running"

    own = {k for k in before if k.startswith(b"%s:{s1}:" % settings.key_prefix.encode())}
    assert len(own) >= 4
    assert client.delete_session("s1") == len(own)
    assert _session_keys(redis_client, settings) == before - own - {b"index:s1"}

    # The run in progress was never disturbed: it still ends with its one `finished`.
    assert client.cancel("busy", wait=True).outcome.value == "cancelled_running"
    rest = list(stream)
    assert [e.type for e in rest].count(EventType.FINISHED) == 1
    assert rest[-1].data["status"] == "interrupted"


def test_cli_session_delete_and_show_refuse_a_pattern_in_one_line(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    for session_id in ("s1", "s2"):
        client.submit(session_id=session_id, prompt="hi")  # queued; no worker needed
    before = _session_keys(redis_client, settings)
    for bad in ("*", "?", "[", "\\", "a*", "[ab]"):
        for argv in (["session", "delete", bad], ["session", "delete", "--force", bad]):
            done = shared_zygote().run(["producer", *argv], env=worker_env(settings))
            assert done.returncode == 2, (argv, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "is not a session id" in done.stderr
            assert "Traceback" not in done.stderr
            assert done.stdout == ""
        shown = subprocess.run(
            [sys.executable, "-m", "producer", "session", "show", bad],
            env=worker_env(settings),
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 2, shown.stderr
        assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert _session_keys(redis_client, settings) == before
