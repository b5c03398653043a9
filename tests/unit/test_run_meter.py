"""RunMeter.written: every event of a written batch is counted, by its type."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from worker.metrics import WorkerMetrics


def _published(registry: CollectorRegistry, event_type: str) -> float:
    value = registry.get_sample_value("claude_queue_events_published_total", {"type": event_type})
    return 0.0 if value is None else value


def test_a_batch_counts_each_event_under_its_type() -> None:
    registry = CollectorRegistry()
    meter = WorkerMetrics(registry, profiles=["readonly"]).run_meter(
        profile="readonly", model=None, submitted_at=0.0
    )
    meter.written(["message", "stream_event", "message", "message", "newer_type"])
    meter.written(["message", "finished"])
    assert _published(registry, "message") == 4
    assert _published(registry, "stream_event") == 1
    assert _published(registry, "finished") == 1
    assert _published(registry, "other") == 1  # a type this code does not know
    meter.written([])
    assert _published(registry, "message") == 4
