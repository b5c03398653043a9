"""Permission requests in the RunStore, on a real Redis: recorded by the worker, decided
once (by a person, a timeout or the run's end), listed while open; and soft cancels."""

from __future__ import annotations

import json
import time

import pytest
import redis

from shared.events import (
    DecisionReason,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    PermissionDecisionData,
    PermissionRequestData,
    RunStatus,
)
from shared.jobs import new_run_id
from shared.runstore import (
    AnswerOutcome,
    CancelOutcome,
    Condition,
    Decision,
    RunStore,
)
from tests.store.conftest import Call, running_run

SESSION = "appr"


def _running(store: RunStore) -> str:
    return running_run(store, SESSION, profile="ask")[0]


def _request(request_id: str, expires_at: float = 0.0) -> PermissionRequestData:
    return PermissionRequestData(
        request_id=request_id,
        tool_name="Bash",
        input={"command": "rm -rf build/"},
        tool_use_id="toolu_1",
        description="Remove the build folder",
        expires_at=expires_at or time.time() + 600,
    )


ALLOW = Decision(behavior="allow", decided_by="alice")


def test_only_the_first_answer_counts_and_reaches_the_owner(
    face: Call, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id = _running(store)
    store.open_request(SESSION, run_id, _request("r1"))
    control = redis_client.pubsub()
    control.subscribe(store.keys.control(SESSION, run_id))
    assert control.get_message(timeout=5)["type"] == "subscribe"
    try:
        assert face("decide", SESSION, run_id, "r1", ALLOW) is AnswerOutcome.DELIVERED
        message = control.get_message(timeout=5)
        assert message is not None
        sent = json.loads(message["data"])
        assert sent["kind"] == "answer" and sent["request_id"] == "r1"
        assert sent["behavior"] == "allow" and sent["decided_by"] == "alice"
        deny = Decision(behavior="deny", message="no")
        assert face("decide", SESSION, run_id, "r1", deny) is AnswerOutcome.ALREADY_DECIDED
        # The second answer told nobody anything.
        assert control.get_message(timeout=0.2) is None
    finally:
        control.close()
    assert store.decisions(SESSION, run_id, ["r1"]) == {"r1": ALLOW}


def test_unknown_requests_and_ended_runs_are_told_apart(face: Call, store: RunStore) -> None:
    run_id = _running(store)
    assert face("decide", SESSION, run_id, "nope", ALLOW) is AnswerOutcome.UNKNOWN_REQUEST
    other = new_run_id()
    assert face("decide", SESSION, other, "r1", ALLOW) is AnswerOutcome.RUN_NOT_RUNNING
    with pytest.raises(ValueError, match="not a permission request id"):
        face("decide", SESSION, run_id, "a:decision", ALLOW)


def test_a_timeout_decides_without_telling_anyone_and_beats_a_late_answer(
    store: RunStore,
) -> None:
    run_id = _running(store)
    store.open_request(SESSION, run_id, _request("r1"))
    timed_out = Decision(behavior="deny", message="timed out", reason=DecisionReason.TIMED_OUT)
    assert store.decide(SESSION, run_id, "r1", timed_out, notify=False) is AnswerOutcome.DELIVERED
    assert store.decide(SESSION, run_id, "r1", ALLOW) is AnswerOutcome.ALREADY_DECIDED
    assert store.decisions(SESSION, run_id, ["r1", "r2"]) == {"r1": timed_out}


def test_open_requests_lists_the_undecided_ones_of_the_running_run(
    face: Call, store: RunStore, redis_client: redis.Redis
) -> None:
    assert face("open_requests", SESSION) == []
    run_id = _running(store)
    now = time.time()
    store.open_request(SESSION, run_id, _request("late", now + 60))
    store.open_request(SESSION, run_id, _request("early", now + 30))
    store.open_request(SESSION, run_id, _request("done", now + 10))
    store.decide(SESSION, run_id, "done", ALLOW)
    # Junk in the hash is data, never a request.
    redis_client.hset(store.keys.approvals(SESSION, run_id), "bad*id", "{}")
    redis_client.hset(store.keys.approvals(SESSION, run_id), "junk", "not json")
    found = face("open_requests", SESSION)
    assert [(o.run_id, o.request.request_id) for o in found] == [
        (run_id, "early"),
        (run_id, "late"),
    ]
    assert found[0].as_dict()["tool_name"] == "Bash"
    assert (
        0
        < redis_client.ttl(store.keys.approvals(SESSION, run_id))
        <= store.settings.event_log_ttl_s
    )


def test_a_cancel_carries_its_grace_to_the_owner(
    face: Call, store: RunStore, redis_client: redis.Redis
) -> None:
    run_id = _running(store)
    assert store.cancel_requested(SESSION, run_id) is None
    outcome = face("cancel", SESSION, run_id, reason="wrap up", grace_s=2.5)
    assert outcome is CancelOutcome.CANCELLED_RUNNING
    assert store.cancel_requested(SESSION, run_id) == 2.5
    # A flag written by an older producer (the time) means: kill now.
    redis_client.set(store.keys.cancel_flag(SESSION, run_id), str(time.time()))
    assert store.cancel_requested(SESSION, run_id) == 0.0


def test_a_lost_run_ends_its_open_requests_before_its_closing_events(
    store: RunStore, redis_client: redis.Redis
) -> None:
    run_id = _running(store)
    store.open_request(SESSION, run_id, _request("open"))
    store.open_request(SESSION, run_id, _request("answered"))
    store.decide(SESSION, run_id, "answered", ALLOW)
    redis_client.delete(store.keys.lease(SESSION))  # the owner stopped renewing: gone
    closing = Event(type=EventType.ERROR, data=ErrorData(code=ErrorCode.LOST, message="lost"))
    assert store.force_finish(
        SESSION,
        run_id,
        status=RunStatus.LOST,
        condition=Condition.LEASE_GONE,
        closing=closing,
        reason="lost",
    )
    logged = [(e.type, e.data.get("request_id")) for e in store.replay(SESSION)]
    assert logged[1:] == [
        (EventType.PERMISSION_DECISION, "open"),
        (EventType.ERROR, None),
        (EventType.FINISHED, None),
    ]
    decision = list(store.replay(SESSION))[1].typed_data()
    assert isinstance(decision, PermissionDecisionData)
    assert (decision.behavior, decision.reason) == ("deny", DecisionReason.RUN_ENDED)
    assert store.open_requests(SESSION) == []
