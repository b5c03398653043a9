"""Redis connections built from settings (sync and asyncio).

With CLAUDE_QUEUE_REDIS_SENTINELS set, every client is Sentinel-managed: each new
connection asks the sentinels where the master is, and one that finds a demoted
master drops itself. So producers, workers, RQ's scheduler and the gateway all follow
a failover by reconnecting, as they already do after any Redis outage.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.client import PubSub

from shared.settings import Settings

# No CLIENT SETINFO on connect: one round trip less per connection, and Redis
# before 7.2 refuses it anyway.
_OPTIONS: dict[str, Any] = {
    "health_check_interval": 30,
    "socket_keepalive": True,
    "driver_info": None,
}


def _handshake(connection: redis.connection.AbstractConnection) -> None:
    """redis-py's own handshake (HELLO, AUTH, SELECT), minus the health-check PING it
    sends first: a connection that has just connected needs none, and its HELLO's
    reply proves it as well. One round trip less per new connection (a work horse
    opens ~6 a run)."""
    connection.on_connect_check_health(check_health=False)


# The sync clients' connections (the worker's and its work horses'): see _handshake.
_SYNC_OPTIONS: dict[str, Any] = {**_OPTIONS, "redis_connect_func": _handshake}


# Sentinels answer in microseconds; one that does not is skipped for the next.
_SENTINEL_TIMEOUT_S = 0.5
# redis-py's asyncio pool fails a command at once ("Too many connections", which reads
# as Redis being away) when all its connections are busy: 150 concurrent submits on one
# AsyncClient lost 50. Ours wait their turn, this long at most.
_POOL_WAIT_S = 20.0


class ReplicasBehind(redis.ConnectionError):
    """A write was not confirmed by CLAUDE_QUEUE_REDIS_MIN_REPLICAS replicas in time.

    A ConnectionError, so that every writer retries it as it retries an outage: the
    store's event writes are idempotent, so a retry either adds them or finds them.
    """


class _SentinelManaged(redis.Redis):
    """A master client that also closes its connections to the sentinels."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            sentinel.close()


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (the master's address, asked on connect) with the blocking pool's
    wait for a free connection."""


class _AsyncSentinelManaged(aioredis.Redis):
    """An asyncio master client that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def sync_redis(settings: Settings, *, timeout_s: float | None = None) -> redis.Redis:
    """A sync client; bytes responses, because RQ needs them.

    `timeout_s` bounds each connect and reply (health checks, scrapes); None: no bound.
    """
    extra: dict[str, Any] = {} if timeout_s is None else _timeouts(timeout_s)
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
        )
        client: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=_SentinelManaged,
            **{**_master_options(settings), **extra},  # the caller's bound wins over the URL's
        )
        return client
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), **_SYNC_OPTIONS, **extra)


def _timeouts(seconds: float) -> dict[str, float]:
    return {"socket_timeout": seconds, "socket_connect_timeout": seconds}


def async_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio client, for web backends: at most REDIS_MAX_CONNECTIONS connections, a
    command waiting (up to _POOL_WAIT_S) when all are busy."""
    pool_options = {"max_connections": settings.redis_max_connections, "timeout": _POOL_WAIT_S}
    if settings.redis_sentinels:
        sentinel = aiosentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
        )
        aclient: aioredis.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=_AsyncSentinelManaged,
            connection_pool_class=_BlockingSentinelPool,
            **pool_options,
            **_master_options(settings),
        )
        return aclient
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(), **pool_options, **_OPTIONS
    )
    return aioredis.Redis.from_pool(pool)


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    password = settings.redis_sentinel_password.get_secret_value()
    return {**_timeouts(_SENTINEL_TIMEOUT_S), **({"password": password} if password else {})}


def _master_options(settings: Settings) -> dict[str, Any]:
    """What redis_url says beyond its host: db, credentials, TLS and URL options."""
    url = settings.redis_url.get_secret_value()
    options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    for server_only in ("host", "port", "connection_class"):
        options.pop(server_only, None)
    if url.startswith("rediss://"):
        options["ssl"] = True  # redis-py then makes its connections Sentinel-managed SSL ones
    return {**_OPTIONS, **options}


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
        # Its own confirmation: a pubsub reused across runs may still hold another's.
        if (
            message is not None
            and message.get("type") == "subscribe"
            and (channel_of(message) == channel)
        ):
            return
    raise redis.TimeoutError(f"Redis did not confirm the subscription to {channel}")


def channel_of(message: dict[str, Any]) -> str | None:
    """The channel a pub/sub message names, as text (redis-py gives bytes or str)."""
    name = message.get("channel")
    if isinstance(name, bytes):
        return name.decode(errors="replace")
    return name if isinstance(name, str) else None


def server_of(kwargs: dict[str, Any]) -> tuple[object, ...]:
    """Which Redis server and database a connection's (or URL's) arguments name."""
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), int(kwargs.get("db") or 0))
