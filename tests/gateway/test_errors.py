"""Every error answer has the one shape: {"error": {"code", "message", "fields"?}}."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY
from tests.gateway.sse import events_url
from tests.gateway.support import assert_error, bearer
from tests.redis_server import free_port


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    assert_error(api.get("/nope"), 404, "not_found")
    assert_error(api.get("/v1/sessions/s/nope"), 404, "not_found")
    assert_error(api.delete("/v1/status"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "session_id": "elsewhere"}, "session_id"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "max_turns": 0}, "max_turns"),
        ({"prompt": "x", "cwd": "relative/path"}, "cwd"),
        ({"prompt": "x", "webhook": "ftp://example.com/hook"}, "webhook"),
        ({"prompt": "x", "webhook": "https://user:pw@example.com/"}, "webhook"),
        ({"prompt": "x", "profile": "no-such-profile"}, "profile"),
        ({"prompt": "x", "on_busy": "sometimes"}, "on_busy"),
    ],
)
def test_an_invalid_run_names_each_bad_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    detail = assert_error(api.post("/v1/sessions/s1/runs", json=body), 422, "invalid_request")
    assert field in detail["fields"], detail


def test_a_run_with_several_bad_fields_names_them_all(api: httpx.Client) -> None:
    body = {"prompt": " ", "max_turns": 0, "timeout_s": -1}
    detail = assert_error(api.post("/v1/sessions/s1/runs", json=body), 422, "invalid_request")
    assert set(detail["fields"]) == {"prompt", "max_turns", "timeout_s"}


def test_other_invalid_input(api: httpx.Client) -> None:
    cases: list[tuple[httpx.Response, str]] = [
        (api.post("/v1/sessions/bad%20id/runs", json={"prompt": "x"}), "session_id"),
        (api.get("/v1/sessions/-leading-dash"), "session_id"),
        (
            api.post(
                "/v1/sessions/s1/runs",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            "body",
        ),
        (api.get(events_url("s1"), headers={"Last-Event-ID": "abc"}), "Last-Event-ID"),
        (api.get(events_url("s1"), params={"after": -1}), "after"),
        (api.get(events_url("s1"), params={"until": "forever"}), "until"),
        (api.get(events_url("s1"), params={"run_id": "xyz"}), "run_id"),
        (api.post("/v1/sessions/s1/cancel", json={"grace_s": -1}), "grace_s"),
        (api.post("/v1/sessions/s1/cancel", json={"run_id": "R"}), "run_id"),
        (api.post("/v1/sessions/s1/permissions/a:b", json={"allow": True}), "request_id"),
        (api.post("/v1/sessions/s1/permissions/r1", json={}), "allow"),
        (api.get("/v1/sessions", params={"limit": 0}), "limit"),
    ]
    for response, field in cases:
        detail = assert_error(response, 422, "invalid_request")
        assert field in detail["fields"], (response.request.url, detail)


def test_busy_sessions_are_409(api: httpx.Client) -> None:
    assert api.post("/v1/sessions/busy/runs", json={"prompt": "x"}).status_code == 202
    rejected = api.post("/v1/sessions/busy/runs", json={"prompt": "y", "on_busy": "reject"})
    assert_error(rejected, 409, "session_busy")
    assert_error(api.delete("/v1/sessions/busy"), 409, "session_busy")
    forced = api.delete("/v1/sessions/busy", params={"force": True})
    assert forced.status_code == 200
    assert forced.json()["keys_removed"] > 0


def test_unknown_sessions_are_404(api: httpx.Client) -> None:
    assert_error(api.get("/v1/sessions/nobody"), 404, "not_found")
    assert_error(api.delete("/v1/sessions/nobody"), 404, "not_found")


def test_credentials_errors_have_the_shape_too(api: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=str(api.base_url), timeout=30)
    with anonymous:
        assert_error(anonymous.get("/v1/status"), 401, "unauthorized")
        assert_error(anonymous.get("/nope"), 404, "not_found")
        token = api.post("/v1/sessions/a/tokens", json={"scopes": ["read"]}).json()["token"]
        assert_error(anonymous.get("/v1/sessions/b", headers=bearer(token)), 403, "forbidden")


def test_without_redis_the_process_is_healthy_but_not_ready(
    start_gateway: GatewayFactory,
) -> None:
    server = start_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with httpx.Client(base_url=server.url, headers=bearer(API_KEY), timeout=60) as api:
        assert api.get("/healthz").json() == {"status": "ok"}
        assert_error(api.get("/readyz"), 503, "redis_unavailable")
        assert_error(api.get("/v1/status"), 503, "redis_unavailable")
        down = api.post("/v1/sessions/s1/runs", json={"prompt": "x"})
        assert "cannot reach Redis" in assert_error(down, 503, "redis_unavailable")["message"]
