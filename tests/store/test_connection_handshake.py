"""shared/connection.py: a new sync connection's handshake sends no PING before it.

Counted on a Redis server of the test's own (`INFO commandstats` is server-wide, and
other tests share the usual one).
"""

from __future__ import annotations

from pathlib import Path

import redis
from pydantic import SecretStr

from shared.connection import sync_redis
from shared.settings import Settings
from tests.redis_server import RedisServer


def _calls(admin: redis.Redis, command: str) -> int:
    stats = admin.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_new_connections_say_hello_and_select_without_a_ping(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        admin = redis.Redis(port=server.port)
        settings = Settings(redis_url=SecretStr(f"redis://127.0.0.1:{server.port}/3"))
        before = {name: _calls(admin, name) for name in ("ping", "hello", "select", "set")}
        for _ in range(5):
            client = sync_redis(settings)
            client.set("k", "v")  # the first command on a new connection
            assert client.get("k") == b"v"  # db 3: SELECT still sent, RESP3 still spoken
            assert client.connection_pool.connection_kwargs["db"] == 3
            client.close()
        after = {name: _calls(admin, name) for name in before}
        assert after["hello"] - before["hello"] == 5
        assert after["select"] - before["select"] == 5
        assert after["set"] - before["set"] == 5
        assert after["ping"] == before["ping"]
        assert redis.Redis(port=server.port, db=3).get("k") == b"v"
        admin.close()
    finally:
        server.stop()
