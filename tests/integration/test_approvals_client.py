"""Answering permission requests and soft cancels through both clients, on a real Redis.

The worker is simulated with the real store: it claims the run, records its requests
(RunStore.open_request) and listens on the run's control channel, as a worker does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.client import PubSub

from producer import AnswerOutcome, AsyncClient, AsyncRunHandle, Client, InvalidJobError
from producer.cancelling import CancelOutcome
from shared.control import MAX_GRACE_S
from shared.encode import encode_body
from shared.events import Event, EventType, FinishedData, PermissionRequestData, RunStatus
from shared.runstore import Claimed, Decision, RunStore
from shared.settings import Settings

Call = Callable[..., Any]
SESSION = "appr"


@pytest.fixture
def store(client: Client) -> RunStore:
    return client.store


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, client: Client, settings: Settings) -> Iterator[Call]:
    """`face("op", *args)`: the operation of the sync Client, or of the AsyncClient."""
    if request.param == "sync":
        yield lambda name, *args, **kwargs: getattr(client, name)(*args, **kwargs)
        return
    loop = asyncio.new_event_loop()
    aclient = AsyncClient(settings)
    try:
        yield lambda name, *a, **kw: loop.run_until_complete(getattr(aclient, name)(*a, **kw))
    finally:
        loop.run_until_complete(aclient.aclose())
        loop.close()


def _running(client: Client, session_id: str = SESSION) -> tuple[str, str]:
    """Submit a run and claim it as a worker would: (run id, fencing token)."""
    handle = client.submit(session_id=session_id, prompt="p", profile="ask")
    claim = client.store.claim(session_id, handle.run_id, worker="w", host="h")
    assert isinstance(claim, Claimed)
    return handle.run_id, claim.token


def _request(request_id: str, expires_in_s: float = 600.0) -> PermissionRequestData:
    return PermissionRequestData(
        request_id=request_id,
        tool_name="Bash",
        input={"command": "rm -rf build/"},
        tool_use_id="toolu_1",
        description="Remove the build folder",
        expires_at=time.time() + expires_in_s,
    )


def _control(redis_client: redis.Redis, store: RunStore, run_id: str) -> PubSub:
    """The run's control channel, subscribed (confirmed) as its owner listens to it."""
    pubsub: PubSub = redis_client.pubsub()
    pubsub.subscribe(store.keys.control(SESSION, run_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    return pubsub


def _sent(pubsub: PubSub) -> dict[str, Any]:
    message = pubsub.get_message(timeout=5)
    assert message is not None, "nothing reached the control channel"
    return dict(json.loads(message["data"]))


def test_an_answer_reaches_the_owner_once_and_is_recorded(
    face: Call, client: Client, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, _token = _running(client)
    store.open_request(SESSION, run_id, _request("r1"))
    control = _control(redis_client, store, run_id)
    try:
        result = face("respond", SESSION, "r1", allow=True, decided_by="alice")
        assert result.outcome is AnswerOutcome.DELIVERED
        assert (result.session_id, result.run_id, result.request_id) == (SESSION, run_id, "r1")
        sent = _sent(control)
        assert sent["kind"] == "answer"
        assert (sent["run_id"], sent["request_id"], sent["behavior"]) == (run_id, "r1", "allow")
        assert sent["decided_by"] == "alice"
        again = face("respond", SESSION, "r1", allow=False, decided_by="bob")
        assert again.outcome is AnswerOutcome.ALREADY_DECIDED
        assert control.get_message(timeout=0.2) is None  # the late answer told nobody
    finally:
        control.close()
    assert store.decisions(SESSION, run_id, ["r1"]) == {
        "r1": Decision(behavior="allow", decided_by="alice")
    }


def test_a_deny_says_who_denied_and_can_change_nothing_else(
    face: Call, client: Client, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, _token = _running(client)
    store.open_request(SESSION, run_id, _request("r1"))
    store.open_request(SESSION, run_id, _request("r2"))
    control = _control(redis_client, store, run_id)
    try:
        denied = face("respond", SESSION, "r1", allow=False, decided_by="bob")
        assert denied.outcome is AnswerOutcome.DELIVERED
        assert _sent(control)["message"] == "denied by bob"
        edited = face(
            "respond", SESSION, "r2", allow=True, updated_input={"command": "rm -rf build/x"}
        )
        assert edited.outcome is AnswerOutcome.DELIVERED
        assert _sent(control)["updated_input"] == {"command": "rm -rf build/x"}
    finally:
        control.close()
    decisions = store.decisions(SESSION, run_id, ["r1", "r2"])
    assert decisions["r1"].message == "denied by bob"
    assert decisions["r2"].decided_by is None


def test_unknown_requests_and_runs_not_running_are_told_apart(
    face: Call, client: Client, store: RunStore
) -> None:
    nothing = face("respond", SESSION, "r1", allow=True)
    assert (nothing.outcome, nothing.run_id) == (AnswerOutcome.RUN_NOT_RUNNING, None)
    # Queued, not yet claimed: there is a run, but it asks nothing yet.
    queued = client.submit(session_id=SESSION, prompt="p", profile="ask")
    early = face("respond", SESSION, "r1", allow=True)
    assert (early.outcome, early.run_id) == (AnswerOutcome.RUN_NOT_RUNNING, queued.run_id)
    assert isinstance(store.claim(SESSION, queued.run_id, worker="w", host="h"), Claimed)
    unknown = face("respond", SESSION, "nope", allow=True)
    assert unknown.outcome is AnswerOutcome.UNKNOWN_REQUEST
    assert store.decisions(SESSION, queued.run_id, ["nope"]) == {}


@pytest.mark.parametrize(
    ("session_id", "request_id", "extra"),
    [
        (SESSION, "r1:decision", {}),
        (SESSION, "r*", {}),
        ("*", "r1", {}),
        (SESSION, "r1", {"message": "m" * 5000}),
    ],
)
def test_bad_answers_are_usage_errors_and_send_nothing(
    face: Call,
    client: Client,
    store: RunStore,
    redis_client: redis.Redis,
    session_id: str,
    request_id: str,
    extra: dict[str, Any],
) -> None:
    run_id, _token = _running(client)
    store.open_request(SESSION, run_id, _request("r1"))
    control = _control(redis_client, store, run_id)
    try:
        with pytest.raises(InvalidJobError):
            face("respond", session_id, request_id, allow=False, **extra)
        assert control.get_message(timeout=0.2) is None
    finally:
        control.close()
    assert store.decisions(SESSION, run_id, ["r1"]) == {}


def test_open_requests_lists_what_is_still_undecided(
    face: Call, client: Client, store: RunStore
) -> None:
    assert face("open_requests", SESSION) == []
    run_id, _token = _running(client)
    store.open_request(SESSION, run_id, _request("later", 300))
    store.open_request(SESSION, run_id, _request("sooner", 60))
    found = face("open_requests", SESSION)
    assert [(o.run_id, o.request.request_id) for o in found] == [
        (run_id, "sooner"),
        (run_id, "later"),
    ]
    assert found[0].as_dict()["input"] == {"command": "rm -rf build/"}
    assert face("respond", SESSION, "sooner", allow=True).delivered
    assert [o.request.request_id for o in face("open_requests", SESSION)] == ["later"]
    with pytest.raises(InvalidJobError):
        face("open_requests", "*")


def test_a_handle_answers_requests_of_its_own_run(client: Client, store: RunStore) -> None:
    handle = client.submit(session_id=SESSION, prompt="p", profile="ask")
    assert isinstance(store.claim(SESSION, handle.run_id, worker="w", host="h"), Claimed)
    store.open_request(SESSION, handle.run_id, _request("r1"))
    queued_next = client.submit(session_id=SESSION, prompt="next", profile="ask")
    assert handle.respond("r1", allow=True, decided_by="carol").delivered
    # The next run is not running: its handle cannot answer anything.
    late = queued_next.respond("r1", allow=True)
    assert (late.outcome, late.run_id) == (AnswerOutcome.RUN_NOT_RUNNING, queued_next.run_id)

    async def from_asyncio() -> AnswerOutcome:
        async with AsyncClient(client.settings) as aclient:
            store.open_request(SESSION, handle.run_id, _request("r2"))
            mine = AsyncRunHandle(aclient, SESSION, handle.run_id, handle.queued_seq)
            return (await mine.respond("r2", allow=False)).outcome

    assert asyncio.run(from_asyncio()) is AnswerOutcome.DELIVERED
    decided = store.decisions(SESSION, handle.run_id, ["r1", "r2"])
    assert decided["r1"].decided_by == "carol"
    assert decided["r2"].behavior == "deny"


def test_a_cancel_carries_its_grace_to_the_owner(
    face: Call, client: Client, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, _token = _running(client)
    control = _control(redis_client, store, run_id)
    try:
        result = face("cancel", SESSION, grace_s=2.5, reason="wrap up")
        assert (result.outcome, result.run_id) == (CancelOutcome.CANCELLED_RUNNING, run_id)
        sent = _sent(control)
        assert (sent["kind"], sent["grace_s"], sent["reason"]) == ("cancel", 2.5, "wrap up")
    finally:
        control.close()
    assert store.cancel_requested(SESSION, run_id) == 2.5


@pytest.mark.parametrize("grace_s", [-1.0, MAX_GRACE_S + 1, float("nan")])
def test_a_grace_out_of_range_is_a_usage_error_and_cancels_nothing(
    face: Call, client: Client, store: RunStore, grace_s: float
) -> None:
    run_id, _token = _running(client)
    with pytest.raises(InvalidJobError, match="grace_s"):
        face("cancel", SESSION, grace_s=grace_s)
    assert store.cancel_requested(SESSION, run_id) is None
    assert store.pending_runs(SESSION) == [run_id]


def _owner_ends_the_run_when_told(
    store: RunStore, redis_client: redis.Redis, run_id: str, token: str
) -> tuple[threading.Thread, list[float]]:
    """A simulated owner: on a cancel, it ends the run (as after its grace)."""
    control = _control(redis_client, store, run_id)
    graces: list[float] = []

    def serve() -> None:
        try:
            sent = _sent(control)
            graces.append(float(sent["grace_s"]))
            finished = Event(
                type=EventType.FINISHED,
                data=FinishedData(status=RunStatus.INTERRUPTED, duration_s=0.1),
            )
            body = encode_body(SESSION, run_id, time.time(), finished)
            store.append(
                SESSION,
                run_id,
                token=token,
                first_index=1,
                bodies=[body],
                final_status=RunStatus.INTERRUPTED,
            )
        finally:
            control.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, graces


def test_a_cancel_that_waits_sees_the_owner_end_the_run_after_its_grace(
    face: Call, client: Client, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, token = _running(client)
    owner, graces = _owner_ends_the_run_when_told(store, redis_client, run_id, token)
    result = face("cancel", SESSION, wait=True, grace_s=1.5, timeout_s=30)
    owner.join(timeout=30)
    assert result.outcome is CancelOutcome.CANCELLED_RUNNING
    assert graces == [1.5]
    assert store.pending_runs(SESSION) == []


def test_handles_cancel_their_runs_softly(client: Client, store: RunStore) -> None:
    handle = client.submit(session_id=SESSION, prompt="p", profile="ask")
    assert isinstance(store.claim(SESSION, handle.run_id, worker="w", host="h"), Claimed)
    assert handle.cancel(grace_s=4.0).outcome is CancelOutcome.CANCELLED_RUNNING
    assert store.cancel_requested(SESSION, handle.run_id) == 4.0

    async def from_asyncio() -> tuple[str, CancelOutcome]:
        async with AsyncClient(client.settings) as aclient:
            other = await aclient.submit(session_id="other", prompt="p", profile="ask")
            claim = store.claim("other", other.run_id, worker="w", host="h")
            assert isinstance(claim, Claimed)
            return other.run_id, (await other.cancel(grace_s=7.0)).outcome

    other_run, outcome = asyncio.run(from_asyncio())
    assert outcome is CancelOutcome.CANCELLED_RUNNING
    assert store.cancel_requested("other", other_run) == 7.0
