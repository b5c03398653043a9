"""How RunStore runs its Lua scripts (sync): registered once, called through redis-py
(plain or in a pipeline), and event writes on the held write line (line.py).

With CLAUDE_QUEUE_REDIS_MIN_REPLICAS an event write is acknowledged only once that many
replicas hold it: WAIT follows it on the same connection, in the same round trip.
Raises ReplicasBehind (a ConnectionError) when they do not confirm in time: the write
stays on the master, and its writer retries it as after an outage.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script as RedisScript

from shared.connection import ReplicasBehind
from shared.runstore.calls import Script, ScriptCall
from shared.runstore.line import WriteLine
from shared.settings import Settings


class ScriptRunner:
    """The store's scripts on one client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._registered: dict[Script, RedisScript] = {}
        self._line: WriteLine | None = None

    def run(self, call: ScriptCall, pipe: redis.client.Pipeline | None = None) -> Any:
        """Through redis-py's client, or queued on `pipe`."""
        return self._script(call.script)(keys=call.keys, args=call.args, client=pipe)

    def run_replicated(self, call: ScriptCall) -> Any:
        """An event-writing script through redis-py, WAIT included where replicas must
        confirm it (a pipeline: one connection, one round trip)."""
        wanted = self._settings.redis_min_replicas
        if wanted == 0:
            return self.run(call)
        with self._client.pipeline(transaction=False) as pipe:
            self.run(call, pipe)
            pipe.execute_command(  # type: ignore[no-untyped-call]
                "WAIT", wanted, self._settings.redis_replica_wait_ms
            )
            reply, acknowledged = pipe.execute()
        return self._confirmed(reply, acknowledged)

    def write_events(self, call: ScriptCall) -> Any:
        """run_replicated on the held write line, WAIT included; through redis-py's
        client for a stand-in client without a connection pool (tests)."""
        if not hasattr(self._client, "connection_pool"):
            return self.run_replicated(call)
        if self._line is None:
            self._line = WriteLine(self._client)
        sha, wanted = self._script(call.script).sha, self._settings.redis_min_replicas
        if wanted == 0:
            return self._line.evalsha(sha, call.script.value, call.keys, call.args)
        wait = ("WAIT", wanted, self._settings.redis_replica_wait_ms)
        reply, acknowledged = self._line.evalsha(
            sha, call.script.value, call.keys, call.args, then=wait
        )
        return self._confirmed(reply, acknowledged)

    def _script(self, name: Script) -> RedisScript:
        script = self._registered.get(name)
        if script is None:
            # On first use: a stand-in client (tests) needs no scripts it never runs.
            script = self._registered[name] = self._client.register_script(name.value)
        return script

    def _confirmed(self, reply: Any, acknowledged: Any) -> Any:
        """The write's reply, if enough replicas acknowledged it; else ReplicasBehind."""
        wanted = self._settings.redis_min_replicas
        if int(acknowledged) < wanted:
            raise ReplicasBehind(
                f"{acknowledged} of {wanted} replicas confirmed the write within "
                f"{self._settings.redis_replica_wait_ms} ms (CLAUDE_QUEUE_REDIS_MIN_REPLICAS)"
            )
        return reply
