"""How RunStore runs its Lua scripts (sync): registered once, called through redis-py
(plain or queued on a pipeline), and event writes on the held write line (line.py).

On a pipeline a script goes as SCRIPT LOAD then EVALSHA, in the pipeline's own round
trip (queue_script). redis-py's way, a registered script called on a pipeline, sends
SCRIPT EXISTS by itself first, at every execute: one round trip more on each submit and
on each job's start, where a worker withdraws its warm advertisements. The SCRIPT LOAD
is answered from Redis's script cache when the script is there, and it puts the script
there when it is not (a restart, a failover, SCRIPT FLUSH), ahead of the EVALSHA, on the
same connection, inside the same MULTI where there is one.

With CLAUDE_QUEUE_REDIS_MIN_REPLICAS an event write is acknowledged only once that many
replicas hold it: WAIT follows it on the same connection, in the same round trip.
Raises ReplicasBehind (a ConnectionError) when they do not confirm in time: the write
stays on the master, and its writer retries it as after an outage.
"""

from __future__ import annotations

from typing import Any, Protocol

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

    def run(self, call: ScriptCall) -> Any:
        """Through redis-py's client (EVALSHA; on NOSCRIPT it loads the script, once)."""
        return self._script(call.script)(keys=call.keys, args=call.args)

    def queue(self, call: ScriptCall, pipe: redis.client.Pipeline) -> None:
        """Queued on `pipe`: two replies, the script's SHA then the script's own."""
        queue_script(pipe, call)

    def run_replicated(self, call: ScriptCall) -> Any:
        """An event-writing script through redis-py, WAIT included where replicas must
        confirm it (a pipeline: one connection, one round trip)."""
        wanted = self._settings.redis_min_replicas
        if wanted == 0:
            return self.run(call)
        with self._client.pipeline(transaction=False) as pipe:
            self.queue(call, pipe)
            pipe.execute_command(  # type: ignore[no-untyped-call]
                "WAIT", wanted, self._settings.redis_replica_wait_ms
            )
            _sha, reply, acknowledged = pipe.execute()
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


class _Buffering(Protocol):
    """A pipeline, sync or asyncio, past MULTI or not watching: commands are queued."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


def queue_script(pipe: _Buffering, call: ScriptCall) -> None:
    """SCRIPT LOAD, then EVALSHA, queued on a pipeline (sync or asyncio): two replies.

    Not redis-py's Script on a pipeline, which costs a SCRIPT EXISTS round trip of its
    own at every execute (module doc). The SHA is the one Redis computes from the text,
    so the EVALSHA names exactly what the SCRIPT LOAD put in the cache."""
    pipe.execute_command("SCRIPT LOAD", call.script.value)
    pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
