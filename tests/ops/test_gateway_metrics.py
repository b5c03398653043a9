"""The gateway's /metrics, scraped over HTTP from a real server while a run waits for an
answer and a client follows its stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gateway.app import create_app
from gateway.routes_metrics import metrics_router
from producer.client import Client
from shared.events import EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.ops.support import WAIT_S, Samples, value
from tests.redis_server import free_port

API_KEY = "ops-metrics-key-0123456789"


def _app(settings: Settings) -> FastAPI:
    """The gateway app with the metrics route (also when app.py does not include it yet)."""
    app = create_app(settings)
    if not any(getattr(route, "path", None) == "/metrics" for route in app.routes):
        app.include_router(metrics_router(app.state.gateway))
    return app


@pytest.fixture
def gateway_url(settings: Settings) -> Iterator[str]:
    keyed = settings.model_copy(update={"api_keys": (SecretStr(API_KEY),)})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(keyed), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:  # uvicorn's own flag, set once the socket listens
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=WAIT_S)


def _scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _until(http: httpx.Client, ready: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = _scrape(http)
        if ready(samples):
            return samples
        assert time.monotonic() < deadline, f"never ready: {sorted(samples.items())}"
        time.sleep(0.05)


def test_gateway_metrics(
    settings: Settings,
    client: Client,
    start_worker: WorkerFactory,
    gateway_url: str,
    tmp_path: Path,
) -> None:
    assert httpx.get(f"{gateway_url}/metrics").status_code == 401  # the API key is required
    start_worker(mode="simple")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=WAIT_S) as http:
        idle = _until(http, lambda s: value(s, "claude_queue_workers", state="idle") == 1)
        assert value(idle, "claude_queue_redis_up") == 1
        assert value(idle, "claude_queue_permission_requests_open") == 0
        assert value(idle, "claude_queue_gateway_sse_streams_open") == 0
        assert value(idle, "claude_queue_gateway_sse_clients_dropped_total") == 0

        prompt = f'FAKE: ask tool=Bash command="make deploy" touch={tmp_path / "t"} n=1'
        handle = client.submit(session_id="asks", prompt=prompt, profile="ask")
        stream = handle.stream(timeout_s=WAIT_S)
        request = next(e for e in stream if e.type is EventType.PERMISSION_REQUEST)
        asking = _until(http, lambda s: value(s, "claude_queue_permission_requests_open") == 1)
        assert value(asking, "claude_queue_runs_running") == 1
        assert value(asking, "claude_queue_workers", state="busy") == 1

        with http.stream("GET", "/v1/sessions/asks/events") as events:
            assert events.status_code == 200
            _until(http, lambda s: value(s, "claude_queue_gateway_sse_streams_open") == 1)
        _until(http, lambda s: value(s, "claude_queue_gateway_sse_streams_open") == 0)

        client.respond("asks", str(request.data["request_id"]), allow=False)
        assert [e.type for e in stream][-1] is EventType.FINISHED
        done = _until(http, lambda s: value(s, "claude_queue_permission_requests_open") == 0)
        assert value(done, "claude_queue_runs_running") == 0
