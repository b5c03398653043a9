"""producer/pubsubread.py against a real Redis: a burst of published messages is taken
from the connection's parser in one go, in order, and every other reply still goes
through redis-py's `handle_message`.

The fast path rests on redis-py's internals (its hiredis reader): these tests fail if a
redis-py upgrade moves them, instead of every message silently going the slow way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.client import PubSub

from producer import pubsubread
from producer import streamloop as sl
from producer.fanout import PubSubFanout
from producer.streamio import _next_message, _wait_live
from shared.backoff import Backoff
from shared.events import Envelope

BURST = 500
# Channels are global to a server: one prefix per test process (xdist runs several).
_PREFIX = f"pubsubread-test-{uuid.uuid4().hex[:12]}"


def ch(name: str) -> bytes:
    return f"{_PREFIX}:{name}".encode()


@contextmanager
def subscribed(redis_url: str) -> Iterator[PubSub]:
    """A sync PubSub of its own client, both closed after."""
    subscriber = redis.Redis.from_url(redis_url)
    pubsub = subscriber.pubsub()
    try:
        yield pubsub
    finally:
        pubsub.close()
        subscriber.close()


def publish_burst(client: redis.Redis, channel: bytes, count: int, tag: str = "m") -> list[bytes]:
    bodies = [f"{tag}{index}".encode() for index in range(count)]
    pipe = client.pipeline(transaction=False)
    for body in bodies:
        pipe.publish(channel, body)
    assert pipe.execute() == [1] * count
    return bodies


def test_a_sync_burst_is_taken_from_the_parser_in_order(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with subscribed(redis_url) as pubsub:
        pubsub.subscribe(ch("a"))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        sent = publish_burst(redis_client, ch("a"), BURST)
        got: list[bytes] = []
        taken_in_bulk = 0
        while len(got) < BURST:
            message = pubsub.get_message(timeout=5)
            assert message is not None and message["type"] == "message"
            got.append(message["data"])
            for reply in pubsubread.buffered(pubsub):
                assert isinstance(reply, pubsubread.Published)
                assert reply.channel == ch("a")
                got.append(reply.data)
                taken_in_bulk += 1
        assert got == sent
        # Most of the burst came without a get_message each: the fast path was taken.
        assert taken_in_bulk > BURST // 2


def test_an_asyncio_burst_is_taken_from_the_parser_in_order(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def main() -> tuple[list[bytes], int]:
        subscriber = aioredis.Redis.from_url(redis_url)
        pubsub = subscriber.pubsub()
        try:
            await pubsub.subscribe(ch("a"))
            assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
            publish_burst(redis_client, ch("a"), BURST)
            got: list[bytes] = []
            taken_in_bulk = 0
            while len(got) < BURST:
                message = await pubsub.get_message(timeout=5)
                assert message is not None and message["type"] == "message"
                got.append(message["data"])
                for reply in pubsubread.buffered(pubsub, limit=50):
                    assert isinstance(reply, pubsubread.Published)
                    got.append(reply.data)
                    taken_in_bulk += 1
            return got, taken_in_bulk
        finally:
            await pubsub.aclose()
            await subscriber.aclose()

    got, taken_in_bulk = asyncio.run(main())
    assert got == [f"m{index}".encode() for index in range(BURST)]
    assert taken_in_bulk > BURST // 2


def test_other_replies_among_a_burst_still_go_through_redis_py(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A subscribe confirmation that arrives between messages keeps its place, and the
    sync stream's reader turns it into redis-py's own message."""
    with subscribed(redis_url) as pubsub:
        pubsub.subscribe(ch("a"))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        first = publish_burst(redis_client, ch("a"), 100, tag="a")
        pubsub.subscribe(ch("b"))  # confirmed after the 100 already sent
        second = publish_burst(redis_client, ch("b"), 100, tag="b")
        backlog: deque[Any] = deque()
        seen: list[tuple[str, bytes, object]] = []
        while len(seen) < 201:
            message = _next_message(pubsub, backlog, 5)
            assert message is not None
            seen.append((message["type"], message["channel"], message["data"]))
        assert seen[:100] == [("message", ch("a"), body) for body in first]
        assert seen[100] == ("subscribe", ch("b"), 2)  # 2 channels now, as Redis counts
        assert seen[101:] == [("message", ch("b"), body) for body in second]
        assert not backlog
        assert _next_message(pubsub, backlog, 0) is None


def test_the_fanout_delivers_a_burst_on_several_channels_in_order(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        fanout = PubSubFanout(client, Backoff(first_s=0.01, max_s=0.05))
        try:
            one, also_one = (
                await fanout.open(ch("one").decode()),
                await fanout.open(ch("one").decode()),
            )
            two = await fanout.open(ch("two").decode())
            pipe = redis_client.pipeline(transaction=False)
            for index in range(1500):
                pipe.publish(ch("one" if index % 3 else "two"), str(index).encode())
            pipe.execute()
            want_one = [str(i).encode() for i in range(1500) if i % 3]
            want_two = [str(i).encode() for i in range(1500) if not i % 3]
            for subscription, want in ((one, want_one), (also_one, want_one), (two, want_two)):
                got = [(await asyncio.wait_for(subscription.queue.get(), 10)).raw for _ in want]
                assert got == want
                assert subscription.queue.empty() and not subscription.lagging
        finally:
            await fanout.aclose()
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("reply", "raised"),
    [
        (redis.ConnectionError("gone"), "gone"),
        (redis.ResponseError("WRONGTYPE"), "an error reply on the pub/sub connection: WRONGTYPE"),
        ([redis.ConnectionError("gone too")], "gone too"),
    ],
)
def test_an_error_reply_reads_as_a_lost_connection(reply: object, raised: str) -> None:
    with pytest.raises(redis.ConnectionError, match=raised):
        pubsubread._raise_if_error(reply)


def test_ordinary_replies_are_no_errors() -> None:
    for reply in ([b"subscribe", b"x", 1], [b"pong", b""], b"PONG"):
        pubsubread._raise_if_error(reply)


def envelope_bytes(seq: int) -> bytes:
    return (
        Envelope(
            seq=seq, session_id="s", run_id="r" * 32, ts=1.0, type="text", data={"text": str(seq)}
        )
        .to_json()
        .encode()
    )


def test_the_sync_stream_hands_held_events_to_its_loop_as_one_batch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Duplicates of the cursor are passed over undecoded; a message that does not
    decode ends the batch and is met, as ever, by the next read."""
    with subscribed(redis_url) as pubsub:
        pubsub.subscribe(ch("a"))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        pipe = redis_client.pipeline(transaction=False)
        for seq in range(1, 301):
            pipe.publish(ch("a"), envelope_bytes(seq))
        pipe.publish(ch("a"), b"{not an envelope")
        pipe.publish(ch("a"), envelope_bytes(301))
        pipe.execute()
        backlog: deque[Any] = deque()
        seqs: list[int] = []
        batches = 0
        while len(seqs) < 290:  # the cursor is at 10: 1..10 are duplicates
            answer = _wait_live(pubsub, backlog, 5, last_seq=10)
            assert isinstance(answer, sl.Live | sl.LiveBatch)
            got = [answer.envelope] if isinstance(answer, sl.Live) else answer.envelopes
            batches += isinstance(answer, sl.LiveBatch)
            seqs.extend(e.seq for e in got)
        assert seqs == list(range(11, 301))
        assert batches < 290 // 2  # most came in batches
        with pytest.raises(ValueError, match="JSON"):
            _wait_live(pubsub, backlog, 5, last_seq=300)
        answer = _wait_live(pubsub, backlog, 5, last_seq=300)
        assert isinstance(answer, sl.Live) and answer.envelope.seq == 301


def test_a_trickle_is_received_by_polling_the_socket_itself(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """One message at a time, as a quiet run sends them: each received in order, through
    the parser (the fast path is taken: a plain TCP connection), then a quiet wait ends
    with None."""
    with subscribed(redis_url) as pubsub:
        pubsub.subscribe(ch("t"))
        assert pubsubread.receive(pubsub, 5) == {
            "type": "subscribe",
            "pattern": None,
            "channel": ch("t"),
            "data": 1,
        }
        assert pubsubread.plain_parser(pubsub) is not None
        for index in range(20):
            assert redis_client.publish(ch("t"), f"m{index}".encode()) == 1
            message = pubsubread.receive(pubsub, 5)
            assert message is not None
            assert (message["type"], message["channel"], message["data"]) == (
                "message",
                ch("t"),
                f"m{index}".encode(),
            )
        assert pubsubread.receive(pubsub, 0.05) is None


def test_a_connection_the_server_closed_is_reported_as_lost(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with subscribed(redis_url) as pubsub:
        pubsub.subscribe(ch("k"))
        assert pubsubread.receive(pubsub, 5) is not None  # the confirmation
        db = str(redis_client.connection_pool.connection_kwargs.get("db", 0))
        killed = [
            c["id"]
            for c in redis_client.client_list()
            if int(c.get("sub", 0)) > 0 and str(c.get("db")) == db
        ]
        assert len(killed) == 1  # this test's subscriber: the only one on the test db
        redis_client.client_kill_filter(_id=killed[0])
        with pytest.raises(redis.ConnectionError):
            pubsubread.receive(pubsub, 5)
