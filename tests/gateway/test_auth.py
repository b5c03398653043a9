"""API keys and session tokens, against a real gateway process."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from gateway.tokens import Scope, mint
from tests.conftest import WorkerFactory
from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY, TOKEN_SECRET, Server
from tests.gateway.sse import Frame, events_url, frames_of, until_finished
from tests.gateway.support import assert_error, bearer, mint_token


def test_the_api_key_works_everywhere(api: httpx.Client) -> None:
    submitted = api.post("/v1/sessions/key-a/runs", json={"prompt": "never runs"})
    assert submitted.status_code == 202
    assert api.get("/v1/sessions/key-a").status_code == 200
    assert api.get("/v1/sessions").json()["sessions"][0]["session_id"] == "key-a"
    assert api.get("/v1/status").status_code == 200
    assert api.post("/v1/sessions/key-a/tokens", json={"scopes": ["read"]}).status_code == 201
    with api.stream("GET", events_url("key-a"), params={"after": 1}) as response:
        assert response.status_code == 200
    cancelled = api.post("/v1/sessions/key-a/cancel", json={})
    assert cancelled.json()["outcome"] == "cancelled_queued"
    answer = api.post("/v1/sessions/key-a/permissions/req-1", json={"allow": True})
    assert answer.json()["outcome"] == "run_not_running"
    assert api.delete("/v1/sessions/key-a").status_code == 200


def test_a_token_is_confined_to_its_session_and_scopes(gateway: Server, api: httpx.Client) -> None:
    minted = mint_token(api, "tok-a", ["read", "submit"])
    assert minted["session_id"] == "tok-a"
    assert minted["scopes"] == ["read", "submit"]
    token = minted["token"]
    with httpx.Client(base_url=gateway.url, headers=bearer(token), timeout=30) as own:
        assert own.post("/v1/sessions/tok-a/runs", json={"prompt": "x"}).status_code == 202
        assert own.get("/v1/sessions/tok-a").status_code == 200

        assert_error(own.get("/v1/sessions/tok-b"), 403, "forbidden")
        assert_error(own.post("/v1/sessions/tok-b/runs", json={"prompt": "x"}), 403, "forbidden")
        assert_error(own.get("/v1/status"), 403, "forbidden")
        assert_error(own.get("/v1/sessions"), 403, "forbidden")
        assert_error(own.delete("/v1/sessions/tok-a"), 403, "forbidden")
        assert_error(
            own.post("/v1/sessions/tok-a/tokens", json={"scopes": ["read"]}), 403, "forbidden"
        )
        lacking = assert_error(own.post("/v1/sessions/tok-a/cancel", json={}), 403, "forbidden")
        assert "cancel" in lacking["message"]
        no_approve = own.post("/v1/sessions/tok-a/permissions/r1", json={"allow": True})
        assert_error(no_approve, 403, "forbidden")

    # As EventSource sends it: in the query, no header.
    with httpx.Client(base_url=gateway.url, timeout=30) as anonymous:
        with anonymous.stream(
            "GET", events_url("tok-a"), params={"token": token, "after": 1}
        ) as response:
            assert response.status_code == 200
        elsewhere = anonymous.get(events_url("tok-b"), params={"token": token})
        assert_error(elsewhere, 403, "forbidden")


def _tampered(token: str) -> str:
    """The same signature over a payload that names another session."""
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sid"] = "tok-other"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


def test_missing_invalid_and_expired_credentials_are_401(
    gateway: Server, api: httpx.Client
) -> None:
    genuine = mint_token(api, "tok-other", ["read"])["token"]
    expired, _ = mint(
        TOKEN_SECRET.encode(),
        "tok-other",
        frozenset({Scope.READ}),
        now=time.time() - 3600,
        ttl_s=60,
    )
    foreign, _ = mint(
        b"another secret", "tok-other", frozenset({Scope.READ}), now=time.time(), ttl_s=60
    )
    url = "/v1/sessions/tok-other"
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        missing = http.get(url)
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (
            "expired"
            in assert_error(http.get(url, headers=bearer(expired)), 401, "unauthorized")["message"]
        )
        for bad in (
            _tampered(genuine),
            foreign,
            genuine[:-2],
            "cq1.x.y",
            "not-a-key",
            API_KEY + "x",
        ):
            assert_error(http.get(url, headers=bearer(bad)), 401, "unauthorized")
        assert_error(
            http.get(events_url("tok-other"), params={"token": foreign}), 401, "unauthorized"
        )
        assert_error(
            http.get("/v1/status", headers={"Authorization": f"Basic {API_KEY}"}),
            401,
            "unauthorized",
        )
        assert http.get(url, headers=bearer(genuine)).status_code == 404  # no such session yet
        assert http.get("/healthz").status_code == 200  # probes need no credentials


def test_minting_refuses_a_ttl_beyond_the_limit_and_unknown_scopes(
    start_gateway: GatewayFactory,
) -> None:
    server = start_gateway(token_max_ttl_s=600.0)
    with httpx.Client(base_url=server.url, headers=bearer(API_KEY), timeout=30) as api:
        too_long = api.post("/v1/sessions/s/tokens", json={"scopes": ["read"], "ttl_s": 601})
        assert "ttl_s" in assert_error(too_long, 422, "invalid_request")["fields"]
        unknown = api.post("/v1/sessions/s/tokens", json={"scopes": ["read", "admin"]})
        assert "scopes.1" in assert_error(unknown, 422, "invalid_request")["fields"]
        empty = api.post("/v1/sessions/s/tokens", json={"scopes": []})
        assert "scopes" in assert_error(empty, 422, "invalid_request")["fields"]
        default = mint_token(api, "s", ["read"])
        assert default["expires_at"] <= time.time() + 600 + 1


def test_without_a_token_secret_minting_says_tokens_are_disabled(
    start_gateway: GatewayFactory,
) -> None:
    server = start_gateway(token_secret=None)
    with httpx.Client(base_url=server.url, headers=bearer(API_KEY), timeout=30) as api:
        refused = api.post("/v1/sessions/s/tokens", json={"scopes": ["read"]})
        detail = assert_error(refused, 503, "tokens_disabled")
        assert "CLAUDE_QUEUE_TOKEN_SECRET" in detail["message"]


def test_a_gateway_without_api_keys_allows_every_request(start_gateway: GatewayFactory) -> None:
    server = start_gateway(api_keys=())
    server.wait_for("gateway_without_api_keys")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/status").status_code == 200
        assert http.post("/v1/sessions/open/runs", json={"prompt": "x"}).status_code == 202


def test_a_token_answers_a_permission_request_and_is_named_in_the_decision(
    gateway: Server, api: httpx.Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    touch = tmp_path / "touched"
    minted = mint_token(api, "tok-ask", ["read", "submit", "approve"])
    start_worker()
    with httpx.Client(base_url=gateway.url, headers=bearer(minted["token"]), timeout=60) as own:
        run = own.post(
            "/v1/sessions/tok-ask/runs",
            json={"prompt": f"FAKE: ask tool=Bash command=true touch={touch}", "profile": "ask"},
        ).json()
        seen: list[Frame] = []
        with connect_sse(
            own, "GET", events_url("tok-ask"), params=until_finished(run["run_id"])
        ) as source:
            frames = frames_of(source)
            for frame in frames:
                seen.append(frame)
                if frame.event == "permission_request":
                    break
            request_id = seen[-1].envelope["data"]["request_id"]
            session = own.get("/v1/sessions/tok-ask").json()
            assert [r["request_id"] for r in session["open_requests"]] == [request_id]
            assert session["pending_runs"] == [run["run_id"]]

            answer = own.post(
                f"/v1/sessions/tok-ask/permissions/{request_id}", json={"allow": True}
            )
            assert answer.status_code == 200
            assert answer.json()["outcome"] == "delivered"
            assert answer.json()["decided_by"] == f"token:{minted['token_id']}"
            seen.extend(frames)

    decision = next(f for f in seen if f.event == "permission_decision")
    assert decision.envelope["data"]["decided_by"] == f"token:{minted['token_id']}"
    assert decision.envelope["data"]["behavior"] == "allow"
    assert seen[-1].event == "finished"
    assert seen[-1].envelope["data"]["status"] == "succeeded"
    assert touch.read_text().strip() == "1 true"
