"""The app as a whole: OpenAPI, CORS, uvicorn workers, mounted inside another app."""

from __future__ import annotations

import sys

import httpx
from httpx_sse import connect_sse

from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY, Server, start_server
from tests.gateway.sse import events_url, frames_of, read_frames, until_finished
from tests.gateway.support import assert_error, bearer

ROUTES = {
    ("post", "/v1/sessions/{session_id}/runs"),
    ("get", "/v1/sessions/{session_id}/events"),
    ("post", "/v1/sessions/{session_id}/cancel"),
    ("post", "/v1/sessions/{session_id}/permissions/{request_id}"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{session_id}"),
    ("delete", "/v1/sessions/{session_id}"),
    ("post", "/v1/sessions/{session_id}/tokens"),
    ("get", "/v1/status"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}

MOUNTED = """
import sys
import uvicorn
from fastapi import FastAPI
from gateway import create_app
from gateway.serve import configure_process
from shared.settings import Settings

settings = Settings.from_environment()
configure_process(settings)
parent = FastAPI()

@parent.get("/")
def home() -> dict[str, str]:
    return {"app": "parent"}

parent.mount("/claude", create_app(settings))
uvicorn.run(parent, host="127.0.0.1", port=int(sys.argv[1]), log_config=None)
"""


def test_every_route_is_in_the_openapi_schema_with_the_error_shape(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    routes = {(m, path) for path, ops in schema["paths"].items() for m in ops}
    assert routes == ROUTES
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["schema"] == error_ref, (
                        method,
                        path,
                        status,
                    )
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    run_fields = schema["components"]["schemas"]["RunCreate"]["properties"]
    assert {"prompt", "webhook", "on_busy"} <= set(run_fields)
    scheduling = {"priority", "run_at", "delay_s", "limit_key", "retry_lost", "retry_on"}
    assert scheduling <= set(run_fields)
    assert "session_id" not in run_fields


def test_cors_preflight_for_a_configured_origin(start_gateway: GatewayFactory) -> None:
    server = start_gateway(cors_origins=("https://app.example",))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        allowed = http.options(
            "/v1/sessions/s1/events",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization,last-event-id",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_workers_serve_from_the_factory(
    start_gateway: GatewayFactory, start_worker: WorkerFactory
) -> None:
    server = start_gateway(["--workers", "2"])
    start_worker()
    with httpx.Client(base_url=server.url, headers=bearer(API_KEY), timeout=60) as api:
        run = api.post("/v1/sessions/multi/runs", json={"prompt": "hi"}).json()
        frames = read_frames(api, "multi", params=until_finished(run["run_id"]))
        assert frames[-1].event == "finished"


def test_the_app_mounted_inside_another(
    gateway_settings: Settings, start_worker: WorkerFactory
) -> None:
    server: Server = start_server(gateway_settings, argv=[sys.executable, "-c", MOUNTED, "{port}"])
    try:
        start_worker()
        with httpx.Client(base_url=server.url, headers=bearer(API_KEY), timeout=60) as http:
            assert http.get("/").json() == {"app": "parent"}
            assert http.get("/claude/healthz").json() == {"status": "ok"}
            assert_error(http.get("/claude/nope"), 404, "not_found")
            assert_error(
                http.get("/claude/v1/status", headers=bearer("wrong")), 401, "unauthorized"
            )
            run = http.post("/claude/v1/sessions/mounted/runs", json={"prompt": "hi"}).json()
            with httpx.Client(
                base_url=f"{server.url}/claude", headers=bearer(API_KEY), timeout=60
            ) as api:
                frames = read_frames(api, "mounted", params=until_finished(run["run_id"]))
        assert frames[-1].event == "finished"
    finally:
        server.stop()


def test_scheduling_fields_over_http_as_json_gives_them(api: httpx.Client) -> None:
    """run_at is an ISO 8601 string and retry_on an array in JSON: both accepted; the
    run waits (no worker here), carries them, and is cancelled while it waits."""
    later = "2099-01-01T09:00:00+00:00"
    body: dict[str, object] = {
        "prompt": "hi",
        "run_at": later,
        "priority": "high",
        "retry_on": ["overloaded"],
    }
    refused = api.post("/v1/sessions/sched/runs", json=body)  # 2099 is over a year away
    assert_error(refused, 422, "invalid_request")
    assert "run_at" in refused.json()["error"]["fields"]
    body["run_at"] = None
    body["delay_s"] = 3600
    accepted = api.post("/v1/sessions/sched/runs", json=body)
    assert accepted.status_code == 202, accepted.text
    with connect_sse(api, "GET", events_url("sched")) as source:
        queued = next(frames_of(source))
    assert queued.event == "queued"
    data = queued.envelope["data"]
    assert data["priority"] == "high" and data["scheduled_for"] is not None
    cancelled = api.post("/v1/sessions/sched/cancel", json={}).json()
    assert cancelled["outcome"] == "cancelled_queued"
