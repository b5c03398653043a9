"""Small helpers of the gateway tests: error answers, tokens, bearer headers."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an error in the one shape, with this status and code: its detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    detail: dict[str, Any] = body["error"]
    assert set(detail) <= {"code", "message", "fields"}
    assert detail["code"] == code
    assert isinstance(detail["message"], str) and detail["message"]
    if "fields" in detail:
        assert detail["fields"] and all(isinstance(v, str) for v in detail["fields"].values())
    return detail


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def mint_token(
    api: httpx.Client, session_id: str, scopes: list[str], ttl_s: float | None = None
) -> dict[str, Any]:
    """A session token minted with the API key (201)."""
    body: dict[str, Any] = {"scopes": scopes}
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    response = api.post(f"/v1/sessions/{session_id}/tokens", json=body)
    assert response.status_code == 201, response.text
    minted: dict[str, Any] = response.json()
    return minted
