"""The held write line (shared/runstore/line.py): event appends past redis-py's client,
with the client's connection settings, retry, script cache fallback and fork rules."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest
import redis

from shared.connection import ReplicasBehind
from shared.encode import encode_body
from shared.events import Event, EventType, TextData
from shared.runstore import RunStore
from shared.runstore.line import WriteLine
from shared.settings import Settings
from tests.store.conftest import running_run


def _append(store: RunStore, session_id: str, run_id: str, token: str, index: int) -> int:
    body = encode_body(
        session_id, run_id, 1.0, Event(type=EventType.TEXT, data=TextData(text=f"t{index}"))
    )
    written = store.append(
        session_id, run_id, token=token, first_index=index, bodies=[body], touch=False
    )
    assert written.accepted
    return written.last_seq


def _sha(source: str) -> str:
    """The name Redis gives a script in its cache."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def _line_addr(store: RunStore) -> str:
    """The client address Redis sees for the store's write line."""
    assert store.scripts._line is not None and store.scripts._line._conn is not None
    sock = store.scripts._line._conn._sock
    assert sock is not None
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_appends_use_one_held_connection(store: RunStore) -> None:
    run_id, token = running_run(store, "held")
    seqs = [_append(store, "held", run_id, token, i) for i in range(1, 6)]
    assert seqs == [2, 3, 4, 5, 6]  # seq 1 is the run's `queued` event
    first = _line_addr(store)
    _append(store, "held", run_id, token, 6)
    assert _line_addr(store) == first
    assert [e.data["text"] for e in store.replay("held", after=1)] == [f"t{i}" for i in range(1, 7)]


def test_a_killed_connection_is_reconnected_and_the_write_lands_once(
    store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, token = running_run(store, "killed")
    _append(store, "killed", run_id, token, 1)
    addr = _line_addr(store)
    assert redis_client.client_kill(addr)
    assert _append(store, "killed", run_id, token, 2) == 3
    assert _line_addr(store) != addr  # a new connection
    # The same index again (a retry after a lost reply) is not logged twice.
    _append(store, "killed", run_id, token, 2)
    assert [e.data["text"] for e in store.replay("killed", after=1)] == ["t1", "t2"]


def test_a_script_redis_does_not_hold_is_evaluated_and_cached(
    redis_client: redis.Redis,
) -> None:
    line = WriteLine(redis_client)
    source = f"return ARGV[1] .. '-{uuid.uuid4().hex}'"  # new text: not in Redis' cache
    sha = _sha(source)
    assert redis_client.script_exists(sha) == [False]
    reply = line.evalsha(sha, source, [], ["a"])
    assert reply.startswith(b"a-")
    assert redis_client.script_exists(sha) == [True]
    assert line.evalsha(sha, source, [], ["b"]).startswith(b"b-")
    line.close()


def test_script_errors_reach_the_caller_and_the_line_still_works(
    redis_client: redis.Redis,
) -> None:
    line = WriteLine(redis_client)
    bad = "return redis.call('NOSUCHCOMMAND')"
    with pytest.raises(redis.ResponseError):
        line.evalsha(_sha(bad), bad, [], [])
    good = "return ARGV[1]"
    assert line.evalsha(_sha(good), good, [], [7]) == b"7"
    line.close()


def test_threads_sharing_a_line_each_get_their_own_replies(redis_client: redis.Redis) -> None:
    line = WriteLine(redis_client)
    source = "return ARGV[1]"
    sha = _sha(source)
    wrong: list[tuple[str, object]] = []

    def worker(name: str) -> None:
        for i in range(200):
            expected = f"{name}-{i}"
            got = line.evalsha(sha, source, [], [expected])
            if got != expected.encode():
                wrong.append((expected, got))

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    line.close()


def test_a_forked_child_takes_its_own_connection(store: RunStore) -> None:
    run_id, token = running_run(store, "forked")
    _append(store, "forked", run_id, token, 1)
    parent_addr = _line_addr(store)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: append on the inherited store, report the line's address
        try:
            _append(store, "forked", run_id, token, 2)
            os.write(write, _line_addr(store).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_addr = os.read(read, 100).decode()
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_addr and child_addr != parent_addr
    # The parent's connection was not disturbed by the child.
    _append(store, "forked", run_id, token, 3)
    assert _line_addr(store) == parent_addr
    assert [e.data["text"] for e in store.replay("forked", after=1)] == ["t1", "t2", "t3"]


def test_a_write_replicas_must_confirm_waits_on_the_line(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # No replica here: WAIT (on the write's own connection) answers 0, ReplicasBehind.
    required = settings.model_copy(update={"redis_min_replicas": 1, "redis_replica_wait_ms": 20})
    store = RunStore(redis_client, required)
    run_id, token = running_run(store, "replicas")
    for _ in range(2):  # the writer's retry of the same event is not logged twice
        with pytest.raises(ReplicasBehind, match="0 of 1 replicas"):
            _append(store, "replicas", run_id, token, 1)
    assert store.scripts._line is not None and store.scripts._line._conn is not None
    assert [e.data["text"] for e in store.replay("replicas", after=1)] == ["t1"]


def test_an_error_reply_before_the_wait_leaves_the_line_in_step(
    redis_client: redis.Redis,
) -> None:
    line = WriteLine(redis_client)
    good = "return ARGV[1]"
    assert line.evalsha(_sha(good), good, [], ["w"]) == b"w"
    assert line._conn is not None
    first = line._conn._sock
    bad = "return redis.call('NOSUCHCOMMAND')"
    with pytest.raises(redis.ResponseError):
        line.evalsha(_sha(bad), bad, [], [], then=("ECHO", "after"))
    assert line.evalsha(_sha(good), good, [], ["x"], then=("ECHO", "y")) == (b"x", b"y")
    # Every reply was read: the same connection, not one replaced for unread data.
    assert line._conn._sock is first
    assert line.evalsha(_sha(good), good, [], ["z"]) == b"z"
    line.close()
