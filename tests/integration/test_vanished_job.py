"""A worker that takes a job off a queue and dies before starting it must not lose it.

A worker listening on several queues (its own and the shared one) pops its next job
without RQ's holding list; here that pop is done by hand (LREM: the job leaves every
list, as when the popping worker is SIGKILLed before it records anything).
"""

from __future__ import annotations

import redis

from producer.client import Client
from shared.events import EventType, RunStatus
from shared.rqjobs import queue_key
from shared.settings import Settings
from tests.conftest import WorkerFactory


def test_a_job_popped_by_a_worker_that_died_is_put_back_and_runs(
    client: Client, start_worker: WorkerFactory, settings: Settings, redis_client: redis.Redis
) -> None:
    handle = client.submit(session_id="vanish", prompt="hello")
    unclaimed = client.store.unclaimed_runs(older_than_s=0)
    assert [(r.session_id, r.run_id) for r in unclaimed] == [("vanish", handle.run_id)]
    assert redis_client.lrem(queue_key(settings.queue_name), 0, handle.run_id) == 1
    quick = settings.model_copy(
        # A 1 s lease was shorter than one run on a loaded CI box: the run was fenced
        # off as lost while it ran. 3 s still rescues the job within seconds.
        update={"lease_ttl_s": 3.0, "lease_renew_s": 1.0, "reaper_interval_s": 0.2}
    )
    start_worker("rescuer", settings_override=quick)
    events = list(handle.stream(timeout_s=60))
    assert events[-1].type is EventType.FINISHED
    assert events[-1].data["status"] == RunStatus.SUCCEEDED
    assert client.store.unclaimed_runs(older_than_s=0) == []


def test_claimed_and_cancelled_runs_leave_the_index(client: Client) -> None:
    first = client.submit(session_id="idx", prompt="one")
    second = client.submit(session_id="idx", prompt="two")
    listed = {r.run_id for r in client.store.unclaimed_runs(older_than_s=0)}
    assert listed == {first.run_id, second.run_id}
    client.cancel("idx", run_id=second.run_id)
    claim = client.store.claim("idx", first.run_id, worker="w", host="h")
    assert claim is not None
    assert client.store.unclaimed_runs(older_than_s=0) == []
