"""RunStore and AsyncRunStore on a real Redis: every operation, on both faces where both have it."""

from __future__ import annotations

import json
import time

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.encode import encode_body
from shared.events import (
    Envelope,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    InterruptedData,
    RunStatus,
    TextData,
)
from shared.jobs import JOB_FUNCTION, new_run_id
from shared.keys import Keys
from shared.runstore import (
    Appended,
    Busy,
    CancelOutcome,
    Claimed,
    Condition,
    Deleted,
    HeldRun,
    NewRun,
    OwnedBy,
    RunState,
    RunStore,
    SessionState,
    Skip,
    Submitted,
    Waiting,
)
from shared.settings import Settings
from tests.store.conftest import Call, new_run


def _text_body(session_id: str, run_id: str, text: str) -> str:
    return encode_body(
        session_id, run_id, time.time(), Event(type=EventType.TEXT, data=TextData(text=text))
    )


def _texts(events: list[Envelope]) -> list[str]:
    return [str(e.data["text"]) for e in events if e.type is EventType.TEXT]


@pytest.fixture
def keys(store: RunStore) -> Keys:
    return store.keys


def _claimed(store: RunStore, run: NewRun, worker: str = "w1") -> str:
    claim = store.claim(run.session_id, run.run_id, worker=worker, host="h")
    assert isinstance(claim, Claimed), claim
    return claim.token


# ----------------------------------------------------------------------------- submit


def test_submit_writes_the_job_and_its_queued_event_in_one_transaction(
    face: Call, store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    run = new_run("s1")
    db = redis_client.connection_pool.connection_kwargs.get("db", 0)
    with redis_client.monitor() as monitor:  # type: ignore[no-untyped-call]
        assert face("submit", run) == Submitted(queued_seq=1)
        sent: list[str] = []
        while not sent or sent[-1] != "EXEC":
            command = monitor.next_command()
            if int(command["db"]) == int(db):  # MONITOR sees every database of the server
                sent.append(str(command["command"]).split(" ")[0].upper())
    inside = sent[sent.index("MULTI") :]
    # RQ's writes and the submit script sit between one MULTI and its EXEC.
    assert {"HSET", "RPUSH", "EVALSHA"} <= set(inside), inside
    assert "MULTI" not in inside[1:] and "EXEC" not in inside[:-1]

    job = Job.fetch(run.run_id, connection=redis_client, serializer=JSONSerializer)
    assert job.func_name == JOB_FUNCTION
    assert list(job.args) == [run.payload]
    assert job.timeout == 300
    assert job.description == "claude-queue run for session s1"
    assert redis_client.lrange(f"rq:queue:{settings.queue_name}", 0, -1) == [run.run_id.encode()]
    assert store.run_record("s1", run.run_id).state is RunState.QUEUED
    assert store.pending_runs("s1") == [run.run_id]
    (queued,) = store.replay_page("s1", 0)
    assert (queued.seq, queued.type, queued.run_id) == (1, EventType.QUEUED, run.run_id)


def test_submit_refuses_a_busy_session_when_asked_and_queues_nothing(
    face: Call, store: RunStore, redis_client: redis.Redis, settings: Settings
) -> None:
    first = new_run("busy")
    assert face("submit", first, reject_if_busy=True) == Submitted(queued_seq=1)
    assert face("submit", new_run("busy"), reject_if_busy=True) == Busy()
    assert face("submit", new_run("busy")) == Submitted(queued_seq=2)  # enqueue waits behind
    assert redis_client.llen(f"rq:queue:{settings.queue_name}") == 2
    assert len(store.pending_runs("busy")) == 2


# ----------------------------------------------------------------------------- claim


def test_claim_follows_submit_order_and_waits_its_turn(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    first, second = new_run("order"), new_run("order")
    store.submit(first)
    store.submit(second)

    assert store.claim("order", second.run_id, worker="w2", host="h") == Waiting(head=first.run_id)
    assert redis_client.exists(keys.wait_marker("order", second.run_id))
    assert store.held_runs() == [HeldRun("order", second.run_id, waiting=True)]

    token = _claimed(store, first)
    assert store.claim("order", first.run_id, worker="w9", host="h") == Skip(RunState.RUNNING)
    # The lease is taken: even the head would wait now, and so does the second run.
    assert store.claim("order", second.run_id, worker="w2", host="h") == Waiting(head=first.run_id)

    done = store.append(
        "order",
        first.run_id,
        token=token,
        first_index=1,
        bodies=[],
        final_status=RunStatus.SUCCEEDED,
    )
    assert done.accepted
    assert store.claim("order", first.run_id, worker="w9", host="h") == Skip(RunState.FINISHED)
    second_token = _claimed(store, second, worker="w2")
    assert int(second_token) > int(token)  # fencing tokens only grow
    assert not redis_client.exists(keys.wait_marker("order", second.run_id))
    assert store.held_runs() == [HeldRun("order", second.run_id, waiting=False)]


def test_claim_gives_a_run_without_a_record_one(store: RunStore) -> None:
    run_id = new_run_id()  # a job placed in the queue by something other than submit
    assert isinstance(store.claim("raw", run_id, worker="w", host="h"), Claimed)
    assert store.run_record("raw", run_id).state is RunState.RUNNING
    assert store.running_session(run_id) == "raw"


# ----------------------------------------------------------------------------- renew


def test_renew_holds_the_lease_only_while_it_is_ours(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    run = new_run("lease")
    store.submit(run)
    token = _claimed(store, run)
    assert store.renew("lease", run.run_id, token)
    assert redis_client.pttl(keys.lease("lease")) > 0
    assert not store.renew("lease", run.run_id, str(int(token) + 1))  # someone else's token

    redis_client.delete(keys.lease("lease"))  # expired
    assert not store.renew("lease", run.run_id, token)
    assert not redis_client.exists(keys.lease("lease"))  # a lost lease is not taken back


# ----------------------------------------------------------------------------- append


def test_append_is_fenced_and_idempotent_per_index(store: RunStore, keys: Keys) -> None:
    run = new_run("pub")
    store.submit(run)
    token = _claimed(store, run)

    def body(text: str) -> str:
        return _text_body("pub", run.run_id, text)

    assert store.append(
        "pub", run.run_id, token=token, first_index=1, bodies=[body("a"), body("b")]
    ) == Appended(True, last_seq=3)
    # A retry after a lost reply writes nothing twice; an overlapping batch only its new part.
    assert store.append(
        "pub", run.run_id, token=token, first_index=1, bodies=[body("a"), body("b")]
    ) == Appended(True, last_seq=0)
    assert store.append(
        "pub", run.run_id, token=token, first_index=2, bodies=[body("b"), body("c")]
    ) == Appended(True, last_seq=4)
    # Someone else's token (a stale owner) is refused.
    assert store.append(
        "pub", run.run_id, token="999", first_index=4, bodies=[body("x")]
    ) == Appended(False)

    closing = store.append(
        "pub",
        run.run_id,
        token=token,
        first_index=4,
        bodies=[body("d")],
        final_status=RunStatus.SUCCEEDED,
    )
    assert closing == Appended(True, last_seq=5)
    record = store.run_record("pub", run.run_id)
    assert (record.state, record.final_status) == (RunState.FINISHED, "succeeded")
    assert store.pending_runs("pub") == [] and store.running_session(run.run_id) is None
    # Retrying the final write is fine; anything new after it is refused.
    assert store.append(
        "pub",
        run.run_id,
        token=token,
        first_index=4,
        bodies=[body("d")],
        final_status=RunStatus.SUCCEEDED,
    ) == Appended(True, last_seq=0)
    assert store.append(
        "pub", run.run_id, token=token, first_index=5, bodies=[body("late")]
    ) == Appended(False)
    assert _texts(store.replay_page("pub", 0)) == ["a", "b", "c", "d"]
    assert store.last_seq("pub") == 5


def test_the_log_is_trimmed_to_about_its_maxlen_and_keeps_the_newest(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = RunStore(redis_client, settings.model_copy(update={"event_log_maxlen": 100}))
    run = new_run("trim")
    store.submit(run)  # seq 1: queued
    token = _claimed(store, run)
    for batch in range(10):  # 1,000 events after `queued`, in batches of 100
        bodies = [_text_body("trim", run.run_id, f"{batch}-{i}") for i in range(100)]
        appended = store.append(
            "trim", run.run_id, token=token, first_index=1 + batch * 100, bodies=bodies
        )
        assert appended == Appended(True, last_seq=101 + batch * 100)
    kept = redis_client.xlen(store.keys.log("trim"))
    # "~": Redis trims whole nodes of the stream (100 entries each by default)
    assert 100 <= kept <= 300
    tail = store.replay_page("trim", 1001 - kept)
    assert [e.seq for e in tail] == list(range(1002 - kept, 1002))
    assert _texts(tail)[-1] == "9-99"


def test_append_is_refused_once_the_lease_passed_on(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    run = new_run("fenced")
    store.submit(run)
    token = _claimed(store, run)
    redis_client.set(keys.lease("fenced"), "other")
    refused = store.append(
        "fenced",
        run.run_id,
        token=token,
        first_index=1,
        bodies=[_text_body("fenced", run.run_id, "late")],
    )
    assert refused == Appended(False)
    assert _texts(store.replay_page("fenced", 0)) == []


# ------------------------------------------------------------------------- force_finish


def _lost(message: str) -> Event:
    return Event(type=EventType.ERROR, data=ErrorData(code=ErrorCode.LOST, message=message))


def test_force_finish_lease_gone_only_once_the_lease_expired(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    run = new_run("ff")
    store.submit(run)
    _claimed(store, run)

    def finish() -> bool:
        return store.force_finish(
            "ff",
            run.run_id,
            status=RunStatus.LOST,
            condition=Condition.LEASE_GONE,
            closing=_lost("gone"),
            reason="gone",
        )

    assert not finish()  # the lease is alive: its owner is too
    redis_client.delete(keys.lease("ff"))
    assert finish()
    assert not finish()  # exactly one party ends a run
    events = store.replay_page("ff", 0)
    assert [e.type for e in events] == [EventType.QUEUED, EventType.ERROR, EventType.FINISHED]
    assert events[-1].data["status"] == "lost" and events[-1].data["reason"] == "gone"
    assert store.run_record("ff", run.run_id).final_status == "lost"
    assert store.held_runs() == []


def test_force_finish_wait_gone_only_once_the_wait_marker_expired(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    first, held = new_run("wg"), new_run("wg")
    store.submit(first)
    store.submit(held)
    assert isinstance(store.claim("wg", held.run_id, worker="w", host="h"), Waiting)

    def finish() -> bool:
        return store.force_finish(
            "wg",
            held.run_id,
            status=RunStatus.LOST,
            condition=Condition.WAIT_GONE,
            closing=_lost("waiter died"),
            reason="waiter died",
        )

    assert not finish()
    redis_client.delete(keys.wait_marker("wg", held.run_id))
    assert finish()
    assert store.pending_runs("wg") == [first.run_id]
    assert store.held_runs() == []


def test_force_finish_for_a_worker_only_ends_that_workers_run(store: RunStore) -> None:
    run = new_run("own")
    store.submit(run)
    _claimed(store, run, worker="w1")
    closing = Event(type=EventType.INTERRUPTED, data=InterruptedData(reason="stopped"))

    def finish(worker: str) -> bool:
        return store.force_finish(
            "own",
            run.run_id,
            status=RunStatus.INTERRUPTED,
            condition=OwnedBy(worker),
            closing=closing,
            reason="stopped",
        )

    assert not finish("w2")
    assert finish("w1")
    assert store.run_record("own", run.run_id).final_status == "interrupted"
    assert [e.type for e in store.replay_page("own", 1)] == [
        EventType.INTERRUPTED,
        EventType.FINISHED,
    ]


# ----------------------------------------------------------------------------- cancel


def test_cancel_says_what_it_did(face: Call, store: RunStore, redis_client: redis.Redis) -> None:
    assert face("cancel", "c", new_run_id(), reason="x") is CancelOutcome.NOTHING_TO_CANCEL

    queued = new_run("c")
    store.submit(queued)
    assert face("cancel", "c", queued.run_id, reason="changed my mind") is (
        CancelOutcome.CANCELLED_QUEUED
    )
    assert store.run_record("c", queued.run_id).final_status == "interrupted"
    assert store.pending_runs("c") == []
    assert [(e.type, e.data.get("reason")) for e in store.replay_page("c", 1)] == [
        (EventType.INTERRUPTED, "changed my mind"),
        (EventType.FINISHED, "changed my mind"),
    ]
    assert face("cancel", "c", queued.run_id, reason="again") is CancelOutcome.ALREADY_FINISHED
    # RQ's record follows: the job left the queue, marked canceled.
    assert redis_client.llen(f"rq:queue:{store.settings.queue_name}") == 0
    assert redis_client.hget(f"rq:job:{queued.run_id}", "status") == b"canceled"

    running = new_run("c")
    store.submit(running)
    _claimed(store, running)
    control = redis_client.pubsub()
    control.subscribe(store.keys.control("c", running.run_id))
    assert control.get_message(timeout=5)["type"] == "subscribe"
    try:
        outcome = face("cancel", "c", running.run_id, reason="stop now")
        assert outcome is CancelOutcome.CANCELLED_RUNNING
        message = control.get_message(timeout=5)
        assert message is not None
        assert json.loads(message["data"]) == {
            "kind": "cancel",
            "session_id": "c",
            "run_id": running.run_id,
            "reason": "stop now",
            "pid": None,
            "grace_s": 0.0,
        }
    finally:
        control.close()
    # The owner ends the run; until then it is running, with its flag set for a late listener.
    assert store.run_record("c", running.run_id).state is RunState.RUNNING
    assert store.cancel_requested("c", running.run_id) == 0.0
    assert store.cancel_requested("c", queued.run_id + "0") is None


# ----------------------------------------------------------------------------- reading


def test_replay_pages_by_seq(face: Call, store: RunStore) -> None:
    run = new_run("log")
    store.submit(run)
    token = _claimed(store, run)
    bodies = [_text_body("log", run.run_id, f"t{i}") for i in range(1, 1201)]
    store.append("log", run.run_id, token=token, first_index=1, bodies=bodies)

    assert [e.seq for e in face("replay_page", "log", 0, None, 2)] == [1, 2]
    assert [e.seq for e in face("replay_page", "log", 2, None, 2)] == [3, 4]
    assert [e.seq for e in face("replay_page", "log", 2, 3, 100)] == [3]
    assert face("replay_page", "log", 1201, None, 5) == []
    everything = face("replay", "log")  # more than one page of REPLAY_PAGE
    assert [e.seq for e in everything] == list(range(1, 1202))
    assert [e.seq for e in face("replay", "log", 1100, 1150)] == list(range(1101, 1151))
    assert face("last_seq", "log") == 1201
    assert face("last_seq", "nothing-here") is None


def test_pending_and_current_runs_skip_entries_that_are_no_run_id(
    face: Call, store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    assert face("current_run", "p") is None
    run = new_run("p")
    store.submit(run)
    redis_client.rpush(keys.pending("p"), "*", "../x")
    assert face("pending_runs", "p") == [run.run_id]
    assert face("current_run", "p") == run.run_id
    redis_client.lpush(keys.pending("p"), "[ab]")
    assert face("current_run", "p") is None  # data, not a run to cancel


# ----------------------------------------------------------------------------- sessions


def test_session_info_and_listing(
    face: Call, store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    assert face("session_info", "none") is None
    idle = new_run("idle")
    store.submit(idle)
    token = _claimed(store, idle)
    store.append(
        "idle", idle.run_id, token=token, first_index=1, bodies=[], final_status=RunStatus.SUCCEEDED
    )
    redis_client.hset(keys.session_state("idle"), mapping={"cwd": "/srv", "last_run_id": "r"})
    redis_client.hset(keys.transcript("idle"), "data", b"12345")
    busy = new_run("busy")  # submitted (and timed) after idle finished
    store.submit(busy)
    queued = face("session_info", "busy")
    assert (queued.state, queued.pending_runs, queued.events) == (
        SessionState.QUEUED,
        [busy.run_id],
        1,
    )
    _claimed(store, busy)
    assert face("session_info", "busy").state is SessionState.RUNNING

    info = face("session_info", "idle")
    assert info.state is SessionState.IDLE and info.as_dict()["state"] == "idle"
    assert (info.cwd, info.last_run_id, info.transcript_bytes, info.last_seq) == ("/srv", "r", 5, 1)
    assert info.last_activity is not None

    # Junk and expired entries of the index are dropped as they are met.
    redis_client.zadd(keys.sessions, {"*": time.time(), "gone": time.time(), "old": 1.0})
    listed = face("sessions")
    assert [i.session_id for i in listed] == ["busy", "idle"]
    assert sorted(redis_client.zrange(keys.sessions, 0, -1)) == [b"busy", b"idle"]
    assert [i.session_id for i in face("sessions", limit=1)] == ["busy"]
    with pytest.raises(ValueError, match="not a session id"):
        face("session_info", "a*")


def test_delete_removes_exactly_the_sessions_keys(
    face: Call, store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    for session_id in ("s1", "s10", "s1x"):
        run = new_run(session_id)
        store.submit(run)
        if session_id == "s1":
            store.cancel(session_id, run.run_id, reason="done")
    redis_client.hset(keys.transcript("s1"), "data", b"x")
    everything = set(redis_client.scan_iter(match=f"{keys.prefix}:*"))
    own = {k for k in everything if k.startswith(keys.session_key_prefix("s1").encode())}
    assert len(own) == 5  # run record, cancel flag, seq, log, transcript

    with pytest.raises(ValueError, match="not a session id"):
        face("delete_session", "s1*")
    assert face("delete_session", "s10") == Busy()  # a run is queued there
    assert face("delete_session", "s1") == Deleted(keys_removed=5)
    # Every other session's keys are still there: s10 and s1x start with "s1" too.
    assert set(redis_client.scan_iter(match=f"{keys.prefix}:*")) == everything - own
    assert b"s1" not in redis_client.zrange(keys.sessions, 0, -1)
    assert face("delete_session", "s1") == Deleted(keys_removed=0)


# ----------------------------------------------------------------------------- worker reads


def test_held_runs_drop_entries_with_bad_ids(
    store: RunStore, keys: Keys, redis_client: redis.Redis
) -> None:
    good = new_run_id()
    redis_client.hset(keys.running, mapping={"*": "s1", good: "s1", "b" * 32: "*"})
    redis_client.hset(keys.waiting, mapping={"../x": "s1"})
    assert store.held_runs() == [HeldRun("s1", good, waiting=False)]
    assert redis_client.hkeys(keys.running) == [good.encode()]
    assert redis_client.hlen(keys.waiting) == 0
    assert store.running_runs() == {good: "s1"}


def test_record_pid_and_run_record(store: RunStore, redis_client: redis.Redis) -> None:
    run = new_run("pid")
    store.submit(run)
    _claimed(store, run)
    store.record_pid("pid", run.run_id, 4242, 99)
    raw = redis_client.hmget(store.keys.run("pid", run.run_id), "pid", "pid_start")
    assert raw == [b"4242", b"99"]
    record = store.run_record("pid", run.run_id)
    assert record.state is RunState.RUNNING and record.started_at is not None
    assert store.run_record("pid", new_run_id()).state is None
