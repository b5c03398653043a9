"""Shared helpers of the scheduling tests: read runs' events back from the session log."""

from __future__ import annotations

from producer.client import Client, RunHandle
from shared.events import Envelope, EventType


def run_events(client: Client, handle: RunHandle) -> list[Envelope]:
    """The logged events of one run (after it finished)."""
    return [e for e in client.history(handle.session_id) if e.run_id == handle.run_id]


def first(events: list[Envelope], event_type: EventType) -> Envelope:
    return next(e for e in events if e.type is event_type)


def started_at(client: Client, handle: RunHandle) -> float:
    """When the run's `started` was written (Redis-side timestamp of the event)."""
    return first(run_events(client, handle), EventType.STARTED).ts


def finished_at(client: Client, handle: RunHandle) -> float:
    return first(run_events(client, handle), EventType.FINISHED).ts


def queued_data(client: Client, handle: RunHandle) -> dict[str, object]:
    return first(run_events(client, handle), EventType.QUEUED).data
