"""Helpers of the console's browser tests: submitting over HTTP, page addresses."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.gateway.sse import read_frames, until_finished


def submit(api: httpx.Client, session_id: str, prompt: str, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/v1/sessions/{session_id}/runs", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def wait_finished(api: httpx.Client, session_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's envelopes, once it finished (an SSE stream that ends at its finished)."""
    return [f.envelope for f in read_frames(api, session_id, params=until_finished(run_id))]


def session_url(base: str, session_id: str, fragment: str = "") -> str:
    return f"{base}/ui/sessions/{quote(session_id, safe='')}{fragment}"
