"""A Redis master, one replica and three sentinels as local processes, for failover tests.

Every process listens on its own free loopback port and writes under the test's own
folder; nothing persists (no AOF, no RDB), so a killed master that restarts comes
back empty, as a replica of the new master.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.redis_server import RedisServer, free_port, probe_client

MASTER_NAME = "cq-test-master"
_DOWN_AFTER_MS = 1000
_FAILOVER_TIMEOUT_MS = 5000
_READY_LIMIT_S = 60.0


class _Node:
    """One redis-server process (data node or sentinel) on its own port."""

    def __init__(self, binary: str, workdir: Path, name: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen([self.binary, *argv])

    def client(self) -> redis.Redis:
        return probe_client(self.port, connect_timeout_s=0.5, timeout_s=1.0)

    def answers(self) -> bool:
        with self.client() as connection:
            try:
                return bool(connection.ping())
            except redis.RedisError:
                return False

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to replicas or sentinels."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class SentinelCluster:
    """master + replica + 3 sentinels; `failover_by_kill()` SIGKILLs the master."""

    def __init__(self, workdir: Path) -> None:
        binary = RedisServer.find_binary()
        self.master = _Node(binary, workdir, "node-a")
        self.replica = _Node(binary, workdir, "node-b")
        self.sentinels = [_Node(binary, workdir, f"sentinel-{i}") for i in range(3)]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> None:
        self._start_data(self.master, replica_of=None)
        self._start_data(self.replica, replica_of=self.master.port)
        # Each sentinel starts knowing the others (their ids are fixed here), as its
        # rewritten config would after a first meeting: they would find each other
        # through the master's hello channel, one message every 2 s.
        ids = [f"{index + 1:040x}" for index in range(len(self.sentinels))]
        for index, sentinel in enumerate(self.sentinels):
            known = "".join(
                f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other.port} {ids[number]}\n"
                for number, other in enumerate(self.sentinels)
                if number != index
            )
            config = sentinel.dir / "sentinel.conf"
            config.write_text(
                f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                f"dir {sentinel.dir}\n"
                f"logfile {sentinel.dir / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {_FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                f"sentinel myid {ids[index]}\n" + known
            )
            sentinel.spawn([str(config), "--sentinel"])
        # A failover needs the replica synced and every sentinel knowing the others.
        self._await(self._ready, "the replica to sync and the sentinels to meet")

    def _start_data(self, node: _Node, *, replica_of: int | None, priority: int = 100) -> None:
        argv = [
            "--port",
            str(node.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(node.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            # A replica's full sync starts at once (Redis waits 5 s by default for
            # more replicas to share a diskless transfer).
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            str(node.dir / "redis.log"),
        ]
        if replica_of is not None:
            # No reads of what it held before its first sync (for a restarted node:
            # nothing): an error a client retries, never an empty answer.
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
            argv += ["--replica-serve-stale-data", "no", "--replica-priority", str(priority)]
        node.spawn(argv)
        self._await(node.answers, f"{node.name} to answer")

    def _ready(self) -> bool:
        try:
            with self.replica.client() as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for sentinel in self.sentinels:
                with sentinel.client() as connection:
                    if len(connection.sentinel_sentinels(MASTER_NAME)) < 2:
                        return False
                    if not connection.sentinel_slaves(MASTER_NAME):
                        return False
        except redis.RedisError:
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the sentinels report it (None if none answers)."""
        for sentinel in self.sentinels:
            with sentinel.client() as connection:
                try:
                    address = connection.sentinel_get_master_addr_by_name(MASTER_NAME)
                except redis.RedisError:
                    continue
                if address:
                    return int(address[1])
        return None

    def _all_name(self, port: int) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as connection:
                try:
                    address = connection.sentinel_get_master_addr_by_name(MASTER_NAME)
                except redis.RedisError:
                    return False
                if not address or int(address[1]) != port:
                    return False
        return True

    def pause_replica(self) -> None:
        """SIGSTOP the replica: from now on the master's writes reach no replica."""
        self.replica.signal(signal.SIGSTOP)

    def failover_by_kill(self) -> None:
        """SIGKILL the master (resuming a paused replica at the same instant) and wait
        until the sentinels name the replica master instead."""
        old = self.master
        old.kill()
        self.replica.signal(signal.SIGCONT)
        # Every sentinel, not just one: a sentinel that has not yet heard of the failover
        # would send clients to the old address, where the old master, restarted empty,
        # answers as a master until the sentinels turn it into a replica.
        self._await(
            lambda: self._all_name(self.replica.port), "every sentinel to name the new master"
        )
        self.master, self.replica = self.replica, old

    def restart_old_master(self) -> None:
        """Bring the killed node back (empty) as a replica of the new master, as its
        config would once the sentinels had rewritten it. Restarted as a master, it
        answered as an empty master until the sentinels turned it: a stream that asked it
        found its session gone (StreamEnded, seen in CI).

        It rejoins with replica-priority 0, so the sentinels never promote it while it
        holds nothing: seen in CI, a loaded host kept the new master from answering a
        sentinel for its 1 s down-after window, a second failover promoted the node that
        had just come back empty, and the stream found its session gone. (A deployment
        would raise the priority again once the node has synced; the tests end first.)"""
        self._start_data(self.replica, replica_of=self.master.port, priority=0)
        self._await(self._replica_synced, "the old master to rejoin as a replica")

    def _replica_synced(self) -> bool:
        try:
            with self.master.client() as master:
                replica = master.info("replication").get("slave0")
                return isinstance(replica, dict) and replica.get("state") == "online"
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for node in [*self.sentinels, self.master, self.replica]:
            node.kill()

    def _await(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + _READY_LIMIT_S
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out waiting for {what}; logs under {self.master.dir.parent}"
                )
            time.sleep(0.05)
