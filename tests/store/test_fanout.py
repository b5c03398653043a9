"""producer.fanout.PubSubFanout on a real Redis: one connection, many followers."""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from producer.fanout import LOST, LiveMessage, PubSubFanout, Subscription
from shared.backoff import Backoff
from shared.events import Envelope
from shared.tasks import cancel_and_wait
from tests.redis_server import RedisServer

FAST = Backoff(first_s=0.01, max_s=0.05)
# Pub/sub channels are global to a Redis server, not per database: tests that run at
# once in other xdist workers must not hear each other's messages (a PUBLISH counted
# two receivers). Each worker process imports this module once: one prefix each.
_CHANNEL_PREFIX = f"fanout-test-{uuid.uuid4().hex[:12]}"
WAIT_S = 10.0

Scenario = Callable[[PubSubFanout, aioredis.Redis], Awaitable[None]]


def ch(name: str) -> str:
    """A channel name no other test process uses."""
    return f"{_CHANNEL_PREFIX}:{name}"


def run(redis_url: str, scenario: Scenario) -> None:
    """Run a scenario with a fresh fan-out and client, closing both whatever happens."""

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        fanout = PubSubFanout(client, FAST)
        try:
            await scenario(fanout, client)
        finally:
            await fanout.aclose()
            await client.aclose()

    asyncio.run(main())


async def next_live(subscription: Subscription) -> LiveMessage:
    return await asyncio.wait_for(subscription.queue.get(), WAIT_S)


async def next_message(subscription: Subscription) -> bytes:
    return (await next_live(subscription)).raw


def subscriber_ids(raw: redis.Redis) -> list[str]:
    """Ids of the connections to the test db holding subscriptions (other dbs may be in use)."""
    db = str(raw.connection_pool.connection_kwargs.get("db", 0))
    return [
        str(c["id"])
        for c in raw.client_list()
        if int(c.get("sub", 0)) > 0 and str(c.get("db")) == db
    ]


def test_followers_of_one_channel_share_each_message_decoded_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    envelope = Envelope(seq=1, session_id="s", run_id="r" * 32, ts=1.0, type="text", data={})
    raw = envelope.model_dump_json().encode()

    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        first, second = await fanout.open(ch("ch")), await fanout.open(ch("ch"))
        assert redis_client.publish(ch("ch"), raw) == 1
        assert redis_client.publish(ch("ch"), b"{not json") == 1
        one, two = await next_live(first), await next_live(second)
        assert one is two  # the same message object for every follower
        assert one.envelope() is two.envelope()  # so decoded and validated once
        assert one.envelope() == envelope
        assert one.envelope().to_json() == raw.decode()  # forwarded as it came
        bad_one, bad_two = await next_live(first), await next_live(second)
        assert bad_one is bad_two
        for bad in (bad_one, bad_two):  # every follower is told it is invalid
            with pytest.raises(ValueError, match="JSON"):
                bad.envelope()

    run(redis_url, scenario)


def test_followers_of_one_channel_share_one_subscription(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        first, second = await fanout.open(ch("ch")), await fanout.open(ch("ch"))
        other = await fanout.open(ch("other"))
        assert len(subscriber_ids(redis_client)) == 1
        assert redis_client.publish(ch("ch"), b"hello") == 1  # one connection for all
        assert await next_message(first) == b"hello"
        assert await next_message(second) == b"hello"
        assert redis_client.publish(ch("other"), b"x") == 1
        assert await next_message(other) == b"x"
        assert first.queue.empty() and second.queue.empty()

    run(redis_url, scenario)


def test_closing_a_follower_stops_only_its_messages(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        leaving, staying = await fanout.open(ch("ch")), await fanout.open(ch("ch"))
        await fanout.close(leaving)
        redis_client.publish(ch("ch"), b"after")
        assert await next_message(staying) == b"after"
        assert leaving.queue.empty()
        await fanout.close(staying)
        await fanout.close(staying)  # closing twice is harmless
        # The last follower gone, the channel is unsubscribed: an open() round trip
        # on another channel proves the UNSUBSCRIBE was processed before we look.
        await fanout.open(ch("sync"))
        assert redis_client.publish(ch("ch"), b"nobody") == 0

    run(redis_url, scenario)


def test_a_follower_that_falls_behind_is_marked_lagging(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("producer.fanout._QUEUE_SIZE", 2)

    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        slow, marker = await fanout.open(ch("ch")), await fanout.open(ch("marker"))
        for index in range(5):
            redis_client.publish(ch("ch"), str(index).encode())
        redis_client.publish(ch("marker"), b"done")
        assert await next_message(marker) == b"done"  # every earlier message was dispatched
        assert slow.lagging
        assert [await next_message(slow), await next_message(slow)] == [b"0", b"1"]
        assert not marker.lagging

    run(redis_url, scenario)


def test_a_dropped_connection_is_reported_then_resubscribed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        subscription = await fanout.open(ch("ch"))
        (connection_id,) = subscriber_ids(redis_client)
        redis_client.client_kill_filter(_id=connection_id)
        assert await next_live(subscription) is LOST  # told it may have missed messages
        # open() of a followed channel returns once the new connection is subscribed.
        late = await fanout.open(ch("ch"))
        assert subscriber_ids(redis_client) != [connection_id]
        assert redis_client.publish(ch("ch"), b"again") == 1
        assert await next_message(subscription) == b"again"
        assert await next_message(late) == b"again"

    run(redis_url, scenario)


def test_an_open_that_fails_leaves_nothing_behind() -> None:
    """A SUBSCRIBE that fails (nothing listens) raises the connection error, every time:
    the failed follower is not left registered, where the next open would have skipped
    the SUBSCRIBE and waited for a confirmation that never comes (a TimeoutError after
    10 s, naming no cause; the asyncio stream reported a down Redis that way)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario(fanout: PubSubFanout, _client: aioredis.Redis) -> None:
        for _ in range(3):
            with pytest.raises(redis.ConnectionError):
                await fanout.open(ch("nobody-listens"))

    run(f"redis://127.0.0.1:{port}/0", scenario)


def test_an_open_cancelled_before_its_confirmation_leaves_nothing_behind(tmp_path: Path) -> None:
    """A caller that goes away while its SUBSCRIBE is unconfirmed (here: the server is
    stopped) leaves no subscription: once the server runs again, the channel has no
    subscriber. Before, the cancelled follower stayed registered and subscribed."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:

        async def scenario(fanout: PubSubFanout, client: aioredis.Redis) -> None:
            await client.ping()  # connected while the server still answers
            await fanout.open(ch("warm-up"))  # the shared connection is up, its reader running
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                opening = asyncio.create_task(fanout.open(ch("abandoned")))
                done, _ = await asyncio.wait({opening}, timeout=0.5)
                assert not done, "confirmed by a stopped server"
                await cancel_and_wait(opening)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while (await client.pubsub_numsub(ch("abandoned")))[0][1] != 0:
                assert asyncio.get_running_loop().time() < deadline, "still subscribed"
                await asyncio.sleep(0.02)  # polling the server's own count
            later = await fanout.open(ch("abandoned"))  # and the channel can be followed again
            await client.publish(ch("abandoned"), b"hello")
            assert await next_message(later) == b"hello"

        run(server.url, scenario)
    finally:
        server.stop()
