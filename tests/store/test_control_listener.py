"""worker.control.ControlListener on a real Redis channel: only a valid cancel of its run acts."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.connection import await_subscription
from shared.control import CancelRequest, PermissionAnswer
from worker.control import ControlListener, ControlSubscriber

# Pub/sub ignores databases: under `pytest -n N` every test process has its own channel,
# or one process's publish would count (and reach) another's listener.
CHANNEL = f"cqtest:control:test:{uuid.uuid4().hex}"
RUN_ID, CLI_PID = "a" * 32, 4242


class Heard:
    """What on_cancel received; `wait_for(n)` blocks until n requests arrived."""

    def __init__(self) -> None:
        self.requests: list[CancelRequest] = []
        self.answers: list[str] = []
        self._arrived = threading.Condition()

    def answer(self, request_id: str) -> None:
        with self._arrived:
            self.answers.append(request_id)
            self._arrived.notify_all()

    def __call__(self, request: CancelRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[CancelRequest]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.requests) >= count, timeout_s)
            return list(self.requests)


@pytest.fixture
def heard() -> Heard:
    return Heard()


def _listener(
    client: redis.Redis, channel: str, heard: Heard, subscriber: ControlSubscriber | None = None
) -> ControlListener:
    return ControlListener(
        client,
        channel,
        run_id=RUN_ID,
        current_pid=lambda: CLI_PID,
        on_cancel=heard,
        on_answer=heard.answer,
        subscriber=subscriber,
    )


@pytest.fixture
def listener(redis_client: redis.Redis, heard: Heard) -> Iterator[ControlListener]:
    listener = _listener(redis_client, CHANNEL, heard)
    listener.subscribe()
    listener.start()
    yield listener
    listener.stop()


def cancel(run_id: str = RUN_ID, pid: int | None = None, reason: str = "stop") -> str:
    return CancelRequest(session_id="s", run_id=run_id, pid=pid, reason=reason).model_dump_json()


@pytest.mark.usefixtures("listener")
def test_a_cancel_of_this_run_is_heard_once_start_returned(
    redis_client: redis.Redis, heard: Heard
) -> None:
    assert redis_client.publish(CHANNEL, cancel(reason="user asked")) == 1
    (request,) = heard.wait_for(1)
    assert (request.run_id, request.reason) == (RUN_ID, "user asked")


@pytest.mark.usefixtures("listener")
def test_anything_but_a_cancel_of_this_run_and_its_cli_is_ignored(
    redis_client: redis.Redis, heard: Heard
) -> None:
    ignored = [
        "{not json",
        '{"kind":"reboot"}',
        cancel(run_id="b" * 32),  # another run
        cancel(pid=CLI_PID + 1),  # a process this run did not start
    ]
    acted_on = [cancel(pid=CLI_PID, reason="with pid"), cancel(reason="without pid")]
    for message in [*ignored, *acted_on]:
        assert redis_client.publish(CHANNEL, message) == 1
    # One connection delivers in order: once the last is heard, all were handled.
    assert [r.reason for r in heard.wait_for(2)] == ["with pid", "without pid"]


def test_stop_unsubscribes(
    redis_client: redis.Redis, listener: ControlListener, heard: Heard
) -> None:
    listener.stop()
    assert redis_client.publish(CHANNEL, cancel()) == 0
    assert heard.requests == []


def test_a_listener_without_redis_lets_the_run_go_on_at_once(heard: Heard) -> None:
    no_retries = Retry(NoBackoff(), 0)
    unreachable = redis.Redis(unix_socket_path="/nonexistent/redis.sock", retry=no_retries)
    listener = _listener(unreachable, CHANNEL, heard)
    listener.subscribe()
    with structlog.testing.capture_logs() as logs:
        listener.start()  # logs and returns: the runner's cancel-flag poll still hears a cancel
    # No SUBSCRIBE went out, so no confirmation was awaited: what start() reports is the
    # connection's own error, not the wait's "did not confirm" after 10 s.
    (unavailable,) = [e for e in logs if e["event"] == "control_listener_unavailable"]
    assert "/nonexistent/redis.sock" in unavailable["error"]
    assert "did not confirm" not in unavailable["error"]
    listener.stop()
    assert heard.requests == []


def test_an_answer_to_this_run_is_announced_by_request_id(
    listener: ControlListener, redis_client: redis.Redis, heard: Heard
) -> None:
    def answer(run_id: str, request_id: str) -> str:
        return PermissionAnswer(
            session_id="s", run_id=run_id, request_id=request_id, behavior="allow"
        ).model_dump_json()

    redis_client.publish(CHANNEL, answer("b" * 32, "other-run"))
    redis_client.publish(CHANNEL, '{"kind": "answer", "run_id": "' + RUN_ID + '"}')
    redis_client.publish(CHANNEL, answer(RUN_ID, "req-1"))
    redis_client.publish(CHANNEL, cancel())  # a marker: everything before it was handled
    heard.wait_for(1)
    assert heard.answers == ["req-1"]


def test_runs_one_after_another_share_one_subscription_connection(
    redis_client: redis.Redis, heard: Heard
) -> None:
    subscriber = ControlSubscriber(redis_client)
    first = _listener(redis_client, f"{CHANNEL}:1", heard, subscriber)
    first.subscribe()
    first.start()
    connection = first._pubsub.connection
    assert connection is not None
    first.stop()
    assert redis_client.publish(f"{CHANNEL}:1", cancel()) == 0  # unsubscribed
    second = _listener(redis_client, f"{CHANNEL}:2", heard, subscriber)
    assert second._pubsub.connection is connection  # kept, still connected
    second.subscribe()
    second.start()
    # Heard on the second run's channel, over the first run's connection; the first's
    # channel reaches nobody.
    assert redis_client.publish(f"{CHANNEL}:1", cancel(reason="late")) == 0
    assert redis_client.publish(f"{CHANNEL}:2", cancel(reason="second")) == 1
    assert [r.reason for r in heard.wait_for(1)] == ["second"]
    second.stop()


def test_a_listener_that_never_listened_does_not_hand_its_pubsub_on(
    redis_client: redis.Redis, heard: Heard
) -> None:
    # Its SUBSCRIBE's confirmation was never read: a next run must not take it for its own.
    subscriber = ControlSubscriber(redis_client)
    spawn_failed = _listener(redis_client, f"{CHANNEL}:1", heard, subscriber)
    spawn_failed.subscribe()
    spawn_failed.stop()  # as when the CLI could not be spawned: start() never ran
    nxt = _listener(redis_client, f"{CHANNEL}:2", heard, subscriber)
    assert nxt._pubsub is not spawn_failed._pubsub
    nxt.subscribe()
    nxt.start()
    assert redis_client.publish(f"{CHANNEL}:2", cancel(reason="heard")) == 1
    assert [r.reason for r in heard.wait_for(1)] == ["heard"]
    nxt.stop()


def test_the_wait_for_a_subscription_skips_another_channels_confirmation(
    redis_client: redis.Redis,
) -> None:
    pubsub = redis_client.pubsub()
    try:
        pubsub.subscribe(f"{CHANNEL}:old")
        pubsub.subscribe(f"{CHANNEL}:new")
        await_subscription(pubsub, f"{CHANNEL}:new")
        # Both confirmations were read: the old one was skipped, not taken for the new.
        assert pubsub.get_message(timeout=0.2) is None
    finally:
        pubsub.close()


def test_a_channel_resubscribed_by_a_reconnect_is_dropped_after_the_next_run(
    redis_client: redis.Redis, heard: Heard
) -> None:
    subscriber = ControlSubscriber(redis_client)
    channels = [f"{CHANNEL}:{index}" for index in range(3)]
    first = _listener(redis_client, channels[0], heard, subscriber)
    first.subscribe()
    first.start()
    first.stop()
    # The connection drops before the UNSUBSCRIBE's confirmation is read: redis-py
    # still lists the first channel and subscribes to it again when it reconnects.
    connection = first._pubsub.connection
    assert connection is not None
    connection.disconnect()
    second = _listener(redis_client, channels[1], heard, subscriber)
    second.subscribe()
    second.start()
    assert redis_client.publish(channels[1], cancel(reason="second")) == 1
    assert [r.reason for r in heard.wait_for(1)] == ["second"]
    second.stop()
    third = _listener(redis_client, channels[2], heard, subscriber)
    third.subscribe()
    third.start()
    assert third._pubsub is first._pubsub
    # Only the third run's channel is subscribed now, on that connection.
    assert [redis_client.publish(channel, "ping") for channel in channels] == [0, 0, 1]
    third.stop()
