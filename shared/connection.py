"""Redis connections built from settings (sync and asyncio)."""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.client import PubSub

from shared.settings import Settings

# No CLIENT SETINFO on connect: one round trip less per connection, and Redis
# before 7.2 refuses it anyway.
_OPTIONS: dict[str, Any] = {
    "health_check_interval": 30,
    "socket_keepalive": True,
    "driver_info": None,
}


def sync_redis(settings: Settings) -> redis.Redis:
    """A sync client; bytes responses, because RQ needs them."""
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), **_OPTIONS)


def async_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio client, for web backends."""
    return aioredis.Redis.from_url(settings.redis_url.get_secret_value(), **_OPTIONS)


def subscribe_confirmed(pubsub: PubSub, channel: str, timeout_s: float = 10.0) -> None:
    """Subscribe and wait until Redis confirms, so nothing published afterwards is missed.

    The pubsub must be created with ignore_subscribe_messages=False.
    """
    pubsub.subscribe(channel)
    await_subscription(pubsub, channel, timeout_s)


def await_subscription(pubsub: PubSub, channel: str, timeout_s: float = 10.0) -> None:
    """Wait for Redis to confirm a SUBSCRIBE already sent (see subscribe_confirmed)."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message.get("type") == "subscribe":
            return
    raise redis.TimeoutError(f"Redis did not confirm the subscription to {channel}")
