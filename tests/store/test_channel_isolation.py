"""Pub/sub ignores database numbers: channel names carry the database, so two
deployments that share a server and a key prefix but not a database never hear
each other's live events or control messages."""

from __future__ import annotations

import redis
from pydantic import SecretStr

from shared.keys import keys_from
from shared.settings import Settings


def test_the_same_session_on_two_databases_has_two_channels(
    settings: Settings, redis_client: redis.Redis
) -> None:
    other_db = (settings.redis_db + 1) % 16
    other = settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:6379/{other_db}")}
    )
    ours, theirs = keys_from(settings), keys_from(other)
    assert ours.channel("s") != theirs.channel("s")
    assert ours.control("s", "r") != theirs.control("s", "r")
    assert ours.log("s") == theirs.log("s")  # keys are per database anyway

    listener = redis_client.pubsub()
    listener.subscribe(ours.channel("s"))
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    try:
        neighbour = redis.Redis.from_url(f"redis://127.0.0.1:6379/{other_db}")
        neighbour.publish(theirs.channel("s"), b"theirs")
        redis_client.publish(ours.channel("s"), b"ours")
        message = listener.get_message(timeout=5)
        assert message is not None and message["data"] == b"ours"
        assert listener.get_message(timeout=0.2) is None
        neighbour.close()
    finally:
        listener.close()
