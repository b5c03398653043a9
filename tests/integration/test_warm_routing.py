"""Warm routing on real workers: a run of a session a worker advertises as warm goes
to that worker's own queue and is run there; a busy worker hands its queue to the
shared one; the reaper moves jobs off the queues of dead workers; `status` shows
each worker's warm sessions.

Fork-mode workers never advertise by themselves, so most tests advertise for them
through the store, as a simple-mode worker would after a run.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import cast

import redis
from pydantic import SecretStr
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.client import Client, RunHandle
from shared.events import Envelope, EventType, RunStatus
from shared.rqjobs import queue_key, worker_queue_name
from shared.runstore import RunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory, worker_env
from tests.redis_server import RedisServer
from tests.zygote import shared_zygote
from worker.reaper import release_worker_queues

STREAM_TIMEOUT_S = 60.0


def _finished(handle: RunHandle) -> list[Envelope]:
    events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
    assert events[-1].type is EventType.FINISHED, [e.type for e in events]
    assert events[-1].data["status"] == RunStatus.SUCCEEDED, events[-1].data
    return events


def _started(events: list[Envelope]) -> dict[str, object]:
    (started,) = [e.data for e in events if e.type is EventType.STARTED]
    return started


def _until_started(handle: RunHandle) -> dict[str, object]:
    """Block until the run's `started` event (the run goes on)."""
    for envelope in handle.stream(timeout_s=STREAM_TIMEOUT_S):
        if envelope.type is EventType.STARTED:
            return envelope.data
        assert envelope.type is not EventType.FINISHED, envelope.data
    raise AssertionError("the stream ended before the run started")


def _warm_for(store: RunStore, worker: str, *sessions: str) -> None:
    store.advertise_warm(worker, {s: time.time() + 120 for s in sessions})


def _waiting(redis_client: redis.Redis, queue_name: str) -> list[bytes]:
    return cast(list[bytes], redis_client.lrange(queue_key(queue_name), 0, -1))


def test_a_run_routed_to_a_worker_is_run_by_that_worker(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    workers = [start_worker("wA"), start_worker("wB")]
    store = RunStore(redis_client, settings)
    run_ids = []
    for worker in ("wA", "wB", "wA", "wB"):
        _warm_for(store, worker, "s1")
        handle = client.submit(session_id="s1", prompt=f"for {worker}")
        assert _started(_finished(handle))["worker"] == worker
        # Starting the run withdrew the advertisement: that worker was busy.
        assert store.warm_owner("s1") is None
        run_ids.append(handle.run_id)
    for proc in workers:  # RQ's bookkeeping of the last job is done once they exit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # RQ recorded every job on the shared queue, where every job of ours is recorded.
    shared = Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)
    assert sorted(shared.finished_job_registry.get_job_ids(cleanup=False)) == sorted(run_ids)
    for worker in ("wA", "wB"):
        own = Queue(worker_queue_name(settings.queue_name, worker), connection=redis_client)
        assert own.finished_job_registry.get_job_ids(cleanup=False) == []
        assert own.started_job_registry.get_job_ids(cleanup=False) == []
    for run_id in run_ids:
        job = Job.fetch(run_id, connection=redis_client, serializer=JSONSerializer)
        assert (job.origin, job.get_status()) == (settings.queue_name, "finished")


def test_a_busy_worker_hands_the_runs_waiting_on_its_queue_to_an_idle_one(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    store = RunStore(redis_client, settings)
    _warm_for(store, "wA", "hold", "next")
    # Both wait on wA's own queue before wA listens: it takes the first, then is busy.
    holding = client.submit(session_id="hold", prompt="FAKE: hang")
    waiting = client.submit(session_id="next", prompt="quick")
    own = worker_queue_name(settings.queue_name, "wA")
    assert _waiting(redis_client, own) == [holding.run_id.encode(), waiting.run_id.encode()]
    start_worker("wB")
    start_worker("wA")
    assert _until_started(holding)["worker"] == "wA"
    assert _started(_finished(waiting))["worker"] == "wB"
    assert _waiting(redis_client, own) == []
    assert store.warm_owner("hold") is None and store.warm_owner("next") is None
    assert holding.cancel().outcome.value == "cancelled_running"


def test_the_reaper_moves_jobs_off_the_queue_of_a_killed_worker(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    store = RunStore(redis_client, settings)
    doomed = start_worker("wA")
    start_worker("wB")
    _warm_for(store, "wA", "s1")
    assert _started(_finished(client.submit(session_id="s1", prompt="one")))["worker"] == "wA"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    # What wA advertised before it died still routes the session's next run to it.
    _warm_for(store, "wA", "s1", "s2")
    handle = client.submit(session_id="s1", prompt="two")
    own = worker_queue_name(settings.queue_name, "wA")
    assert _waiting(redis_client, own) == [handle.run_id.encode()]
    # RQ still has wA's record (it expires much later); its process is gone.
    assert redis_client.exists("rq:worker:wA")
    assert release_worker_queues(store) == 1
    assert store.warm_owner("s1") is None and store.warm_owner("s2") is None
    assert store.warm_sessions("wA") == {}
    assert _started(_finished(handle))["worker"] == "wB"
    assert _waiting(redis_client, own) == []


def test_the_reaper_moves_jobs_off_the_queue_of_a_worker_that_never_existed(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    store = RunStore(redis_client, settings)
    start_worker("wB")
    _warm_for(store, "ghost", "s1")
    handle = client.submit(session_id="s1", prompt="hello")
    assert _waiting(redis_client, worker_queue_name(settings.queue_name, "ghost"))
    assert release_worker_queues(store) == 1
    assert _started(_finished(handle))["worker"] == "wB"


def test_a_live_worker_that_leaves_its_queue_alone_loses_it_after_a_lease(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    """A job heading a live worker's own queue across two looks a lease apart moves."""
    store = RunStore(redis_client, settings.model_copy(update={"lease_ttl_s": 0.0001}))
    # wA is busy with a run that arrived by the shared queue...
    start_worker("wA")
    holding = client.submit(session_id="hold", prompt="FAKE: hang")
    assert _until_started(holding)["worker"] == "wA"
    # ...and a run lands on its queue after it moved its queue away (a stale route).
    _warm_for(store, "wA", "s1")
    stuck = client.submit(session_id="s1", prompt="hello")
    start_worker("wB")
    assert release_worker_queues(store) == 0  # first sighting
    # Redis's clock moves on between the two looks (the lease is 0.1 ms).
    while release_worker_queues(store) == 0:
        pass
    assert _started(_finished(stuck))["worker"] == "wB"
    assert holding.cancel().outcome.value == "cancelled_running"


def _status(settings: Settings, *args: str) -> str:
    done = shared_zygote().run(["producer", "status", *args], env=worker_env(settings))
    done.check_returncode()
    return done.stdout


def test_simple_workers_advertise_their_warm_sessions_and_runs_follow_them(
    client: Client, start_worker: WorkerFactory, redis_client: redis.Redis, settings: Settings
) -> None:
    simple = [start_worker("wA", mode="simple"), start_worker("wB", mode="simple")]
    runs = [_finished(client.submit(session_id="chat", prompt=f"p{i}")) for i in range(6)]
    started = [_started(events) for events in runs]
    owner = str(started[0]["worker"])
    # Two idle workers: only routing keeps every run of the session on one of them.
    assert [(s["worker"], s["warm"]) for s in started] == [(owner, False)] + [(owner, True)] * 5
    store = RunStore(redis_client, settings)
    assert store.warm_owner("chat") == owner
    assert list(store.warm_sessions(owner)) == ["chat"]

    status = json.loads(_status(settings, "--json"))
    workers = {w["name"]: w for w in cast(list[dict[str, object]], status["workers"])}
    assert list(cast(dict[str, float], workers[owner]["warm_sessions"])) == ["chat"]
    other = "wB" if owner == "wA" else "wA"
    assert workers[other]["warm_sessions"] == {}
    assert worker_queue_name(settings.queue_name, owner) in cast(
        list[str], workers[owner]["queues"]
    )

    # A worker that stops advertises nothing any more.
    proc = simple[0] if owner == "wA" else simple[1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert store.warm_owner("chat") is None
    assert store.warm_sessions(owner) == {}
    after = _finished(client.submit(session_id="chat", prompt="after"))
    assert (_started(after)["worker"], _started(after)["warm"]) == (other, False)


def test_a_simple_worker_says_each_warm_change_once_and_checks_no_script(
    start_worker: WorkerFactory, settings: Settings, tmp_path: Path
) -> None:
    # Our own redis-server: MONITOR then sees this worker's commands and nobody else's.
    server = RedisServer(tmp_path / "redis")
    server.start()
    own = settings.model_copy(update={"redis_url": SecretStr(server.url), "scheduler": False})
    client = Client(own)
    monitor = redis.Redis.from_url(server.url)
    try:
        start_worker("wA", mode="simple", settings_override=own)
        _finished(client.submit(session_id="chat", prompt="first"))  # cold, then parked
        index = client.keys.worker_warm("wA").encode()
        seen: list[list[bytes]] = []
        done = threading.Event()

        def watch() -> None:
            with monitor.monitor() as feed:  # type: ignore[no-untyped-call]
                connected.set()
                for command in feed.listen():
                    seen.append(str(command["command"]).encode().split())
                    if done.is_set():
                        return

        connected = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert connected.wait(10)
        runs = [_finished(client.submit(session_id="chat", prompt=f"p{i}")) for i in range(2)]
        assert [_started(r)["warm"] for r in runs] == [True, True]
        done.set()
        client.redis.ping()  # one more command, so the watcher's loop sees `done`
        watcher.join(10)
    finally:
        client.close()
        monitor.close()
        server.stop()
    assert not [c for c in seen if c[:2] == [b"SCRIPT", b"EXISTS"]]
    # The index is read in the withdrawal's own round trip, once a run (its start).
    assert len([c for c in seen if c[:1] == [b"HGETALL"] and index in c]) == 2
    # Each run: withdrawn at its start, advertised once when its CLI is parked.
    assert len([c for c in seen if c[:1] == [b"HSET"] and index in c]) == 2
