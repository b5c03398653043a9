"""Delayed runs: visible at once as queued with scheduled_for, started by RQ's scheduler
no earlier than their time, cancellable while they wait, keeping their session's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producer.client import Client
from producer.errors import InvalidJobError
from shared.events import EventType, RunStatus
from shared.rqjobs import scheduled_registry_key
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.scheduling.support import queued_data, run_events, started_at


def test_a_delayed_run_starts_no_earlier_than_its_time(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker(settings_override=settings.model_copy(update={"scheduler": True}))
    handle = client.submit(session_id="later", prompt="hello", delay_s=2)
    queued = queued_data(client, handle)
    scheduled_for = queued["scheduled_for"]
    assert isinstance(scheduled_for, float | int)
    assert client.redis.zscore(scheduled_registry_key(settings.queue_name), handle.run_id)
    assert client.session("later").state.value == "queued"  # type: ignore[union-attr]
    # A run of the same session submitted meanwhile keeps behind it.
    after = client.submit(session_id="later", prompt="after")
    assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert after.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert started_at(client, handle) >= scheduled_for
    assert started_at(client, handle) < started_at(client, after)
    submitted = run_events(client, handle)[0].ts
    assert started_at(client, handle) >= submitted + 2


def test_run_at_in_the_past_runs_at_once(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()  # no scheduler needed: a time already past is no delay
    past = datetime.now(UTC) - timedelta(minutes=5)
    handle = client.submit(session_id="now", prompt="hello", run_at=past)
    assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED
    assert "scheduled_for" not in queued_data(client, handle)


def test_a_delayed_run_is_cancelled_while_it_waits(client: Client, settings: Settings) -> None:
    handle = client.submit(
        session_id="c", prompt="hello", run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert handle.cancel().outcome.value == "cancelled_queued"
    assert client.redis.zscore(scheduled_registry_key(settings.queue_name), handle.run_id) is None
    types = [e.type for e in run_events(client, handle)]
    assert types == [EventType.QUEUED, EventType.INTERRUPTED, EventType.FINISHED]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"run_at": datetime(2030, 1, 1)}, "timezone"),
        ({"delay_s": -1}, "delay_s"),
        ({"delay_s": 5, "run_at": datetime.now(UTC)}, "not both"),
        ({"run_at": datetime.now(UTC) + timedelta(days=400)}, "within a year"),
        ({"priority": "urgent"}, "priority"),
        ({"limit_key": "a b"}, "limit_key"),
        ({"retry_lost": 11}, "retry_lost"),
        ({"retry_on": ["crashed"]}, "retry_on"),
    ],
)
def test_bad_scheduling_fields_are_refused(
    client: Client, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidJobError, match=problem):
        client.submit(session_id="bad", prompt="x", **fields)
    assert client.session("bad") is None
