"""examples/fastapi_app.py for real: its own uvicorn process in front of a real gateway
and worker. POST /ask, then follow the returned events_url with the returned token only,
as the page's EventSource does (the browser's JS itself is not run here)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from httpx_sse import connect_sse

from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory
from tests.gateway.server import API_KEY, Server, start_server
from tests.gateway.sse import assert_frames_consistent, frames_of
from tests.gateway.support import assert_error, bearer

EXAMPLES = REPO / "examples"
MAX_EXAMPLE_LINES = 60


@pytest.fixture
def example(gateway: Server, gateway_settings: Settings) -> Iterator[httpx.Client]:
    """The example app (`uvicorn --factory`) pointed at the gateway; an HTTP client for it."""
    argv = [sys.executable, "-m", "uvicorn", "--factory", "examples.fastapi_app:app_from_env"]
    argv += ["--host", "127.0.0.1", "--port", "{port}"]
    env = {"CQ_GATEWAY_URL": gateway.url, "CQ_API_KEY": API_KEY}
    server = start_server(gateway_settings, argv=argv, env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as web:
            yield web
    finally:
        server.stop()
        print(f"--- example app ---\n{server.log()}")


def _ask(web: httpx.Client, prompt: str, session_id: str | None = None) -> dict[str, Any]:
    body = {"prompt": prompt} | ({"session_id": session_id} if session_id else {})
    response = web.post("/ask", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert set(answer) == {"session_id", "run_id", "events_url", "token"}
    return answer


def _with_token(answer: dict[str, Any]) -> str:
    """The URL the page's EventSource opens."""
    return f"{answer['events_url']}&token={quote(answer['token'])}"


def test_ask_then_follow_the_run_with_the_read_token(
    example: httpx.Client, gateway: Server, start_worker: WorkerFactory
) -> None:
    start_worker()
    page = example.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "new EventSource(run.events_url" in page.text

    answer = _ask(example, "FAKE: slow n=3 delay_ms=10", "example-one")
    assert answer["events_url"].startswith(f"{gateway.url}/v1/sessions/example-one/events?")
    with (
        httpx.Client(timeout=60) as browser,  # no API key: only the token
        connect_sse(browser, "GET", _with_token(answer)) as source,
    ):
        frames = list(frames_of(source))

    assert_frames_consistent(frames, "example-one")
    assert {f.run_id for f in frames} == {answer["run_id"]}
    assert frames[0].event == "queued"
    assert frames[-1].event == "finished"
    assert frames[-1].envelope["data"]["status"] == "succeeded"
    assert sum(f.event == "message" for f in frames) >= 3


def test_the_token_reads_its_own_session_only(
    example: httpx.Client, gateway: Server, start_worker: WorkerFactory
) -> None:
    start_worker()
    mine = _ask(example, "hello", "example-mine")
    theirs = _ask(example, "hello")  # a new session the backend named
    assert theirs["session_id"].startswith("web-")
    assert theirs["session_id"] != mine["session_id"]

    with httpx.Client(base_url=gateway.url, timeout=60) as browser:
        token = bearer(mine["token"])
        other = browser.get(f"/v1/sessions/{theirs['session_id']}/events", headers=token)
        assert_error(other, 403, "forbidden")
        query = f"/v1/sessions/{theirs['session_id']}/events?token={quote(mine['token'])}"
        assert_error(browser.get(query), 403, "forbidden")
        submit = browser.post("/v1/sessions/example-mine/runs", json={"prompt": "x"}, headers=token)
        assert_error(submit, 403, "forbidden")  # read scope only
        assert_error(browser.get(f"/v1/sessions/{mine['session_id']}/events"), 401, "unauthorized")
        with connect_sse(browser, "GET", _with_token(theirs)) as source:
            assert list(frames_of(source))[-1].event == "finished"


def test_a_bad_prompt_is_the_gateways_error(example: httpx.Client) -> None:
    response = example.post("/ask", json={"prompt": "", "session_id": "example-bad"})
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize("name", ["fastapi_app.py", "django_view.py"])
def test_examples_are_short_python(name: str) -> None:
    source = (EXAMPLES / name).read_text()
    ast.parse(source, filename=name)  # Django is not installed: parsed, not imported
    assert len(source.splitlines()) < MAX_EXAMPLE_LINES
