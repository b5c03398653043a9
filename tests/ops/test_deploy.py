"""deploy/: the Grafana dashboard and the alert rules load, and every metric they use is
one the code exports (names collected from the real metric definitions)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.routes_metrics import redis_families, stream_families
from gateway.state import Gateway
from shared.metrics import queue_families
from shared.settings import Settings
from tests.conftest import REPO
from worker.metrics import WorkerMetrics

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "claude-queue.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
_METRIC = re.compile(r"\bclaude_queue_[a-z_]+\b")
REQUIRED_ALERTS = {
    "ClaudeQueueRunsLost",
    "ClaudeQueueQueueDepthGrowing",
    "ClaudeQueueNoWorkers",
    "ClaudeQueueCliAuthFailures",
    "ClaudeQueueRedisUnreachable",
}


def _sample_names(families: Any) -> set[str]:
    return {sample.name for family in families for sample in family.samples}


def exported_names(settings: Settings) -> set[str]:
    """Every sample name a worker or the gateway can export."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = WorkerMetrics(registry, profiles=["readonly"])
    # Labelled families export samples only once a label set exists.
    metrics.runs_finished.labels(status="succeeded")
    metrics.events_published.labels(type="started")
    metrics.errors.labels(code="lost")
    metrics.cost.labels(model="m", profile="readonly")
    metrics.tokens.labels(model="m", kind="input")
    metrics.webhook_deliveries.labels(outcome="delivered")
    names = _sample_names(registry.collect())
    queue = queue_families(queue="q", redis_up=True, queued=1, workers_by_state={"idle": 1})
    names |= _sample_names(queue)
    gateway = Gateway.build(settings)
    try:
        names |= _sample_names(stream_families(gateway))
        names |= _sample_names(asyncio.run(redis_families(gateway)))
    finally:
        asyncio.run(gateway.aclose())
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_metric_used_is_exported(settings: Settings) -> None:
    exported = exported_names(settings)
    assert "claude_queue_permission_requests_open" in exported  # Redis answered the read
    used: dict[str, set[str]] = {}
    for expr in _dashboard_exprs():
        for name in _METRIC.findall(expr):
            used.setdefault(name, set()).add(f"dashboard: {expr}")
    for rule in _alert_rules():
        for name in _METRIC.findall(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    unknown = {name: places for name, places in used.items() if name not in exported}
    assert not unknown, unknown
    # And the list is all on the dashboard.
    for name in (
        "claude_queue_runs_started_total",
        "claude_queue_runs_finished_total",
        "claude_queue_run_duration_seconds_bucket",
        "claude_queue_dispatch_seconds_bucket",
        "claude_queue_events_published_total",
        "claude_queue_publish_buffer_bytes",
        "claude_queue_cancel_seconds_bucket",
        "claude_queue_runs_lost_total",
        "claude_queue_queue_depth",
        "claude_queue_workers",
        "claude_queue_cli_cost_usd_total",
        "claude_queue_cli_tokens_total",
    ):
        assert name in used, name


def test_alert_rules_shape() -> None:
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    # On PATH, or where `make promtool` puts it: beside this interpreter, in .venv/bin.
    promtool = shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )
    if promtool is None:
        pytest.skip("promtool is not installed (make promtool)")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
