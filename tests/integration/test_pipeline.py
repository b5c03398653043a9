"""Submit → real RQ worker → fake CLI → Redis → client, end to end."""

from __future__ import annotations

from producer.client import Client
from shared.events import EventType
from tests.conftest import WorkerFactory


def test_submit_streams_every_event_in_order(client: Client, start_worker: WorkerFactory) -> None:
    start_worker()
    handle = client.submit(session_id="s1", prompt="hello there")
    events = list(handle.stream(timeout_s=60))
    types = [e.type for e in events]
    assert types[0] is EventType.QUEUED
    assert types[1] is EventType.STARTED
    assert types.count(EventType.FINISHED) == 1 and types[-1] is EventType.FINISHED
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    assert events[-1].data["status"] == "succeeded"
    texts = [b["text"] for e in events if e.type is EventType.MESSAGE for b in e.data["content"]]
    assert "ECHO:hello there" in texts
