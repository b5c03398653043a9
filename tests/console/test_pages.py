"""The console in a real Chromium against a real gateway and worker: the list, a
conversation, and how the pages are served."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from console import CONTENT_SECURITY_POLICY
from tests.conftest import WorkerFactory
from tests.console.conftest import PHONE, Shoot
from tests.console.support import session_url, submit, wait_finished
from tests.gateway.server import Server

pytestmark = pytest.mark.slow


def test_pages_are_served_with_a_strict_policy(open_api: httpx.Client) -> None:
    for path in ("/ui/", "/ui/sessions/s-1", "/ui/sessions/a%2Fb"):
        response = open_api.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert '<base href="/ui/">' in response.text
        assert "<script>" not in response.text  # only <script type=module src=...>
    script = open_api.get("/ui/static/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert open_api.get("/ui/static/nothing.js").status_code == 404
    moved = open_api.get("/ui", follow_redirects=False)
    assert moved.status_code in (301, 302, 307, 308)
    assert moved.headers["location"].endswith("/ui/")
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


def test_the_list_shows_a_session_appear_and_finish_live(
    page: Page,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
    screenshot: Shoot,
) -> None:
    page.goto(f"{open_gateway.url}/ui/")
    expect(page.locator("#list-status")).to_contain_text("0 of 0 sessions")

    start_worker()
    run = submit(open_api, "list-live", "FAKE: tool")
    row = page.locator('tr[data-session="list-live"]')
    expect(row).to_be_visible()
    wait_finished(open_api, "list-live", run["run_id"])
    expect(row.locator("td").nth(0)).to_have_text("idle")
    expect(row.locator("td").nth(2)).to_have_text("succeeded")
    result = open_api.get("/v1/sessions/list-live").json()["last_run"]
    assert result["cost_usd"] is not None
    usd = result["cost_usd"]
    expect(row.locator("td").nth(4)).to_have_text(f"${usd:.4f}" if usd < 0.01 else f"${usd:.2f}")

    submit(open_api, "other-one", "hello")
    expect(page.locator('tr[data-session="other-one"]')).to_be_visible()
    expect(page.locator('tr[data-session="other-one"] td').nth(0)).to_have_text("idle")
    screenshot(page, "sessions")
    page.fill("#filter", "list")
    expect(page.locator("#sessions tr")).to_have_count(1)
    page.click('tr[data-session="list-live"] a')
    expect(page).to_have_url(session_url(open_gateway.url, "list-live"))
    expect(page.locator("h1")).to_contain_text("list-live")


def test_a_conversation_shows_prompt_tool_call_result_and_final_stats(
    page: Page,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
    screenshot: Shoot,
) -> None:
    start_worker()
    run = submit(open_api, "conv-1", 'FAKE: tool command=ls output="README.md"')
    envelopes = wait_finished(open_api, "conv-1", run["run_id"])
    result = next(e["data"] for e in envelopes if e["type"] == "result")

    page.goto(session_url(open_gateway.url, "conv-1"))
    expect(page.locator(".prompt-text")).to_have_text('FAKE: tool command=ls output="README.md"')
    tool = page.locator("details.tool")
    expect(tool).to_have_count(1)
    expect(tool.locator("summary")).to_contain_text("Bash")
    tool.locator("summary").click()
    expect(tool.locator("pre").first).to_contain_text('"command": "ls"')
    expect(tool.locator("pre").nth(1)).to_contain_text("README.md")
    expect(page.locator(".row-finished")).to_contain_text("succeeded")
    stats = page.locator(".row-result")
    expect(stats).to_contain_text(f"{result['num_turns']} turns")
    expect(stats).to_contain_text(f"{result['usage']['output_tokens']} out")
    expect(page.locator("#live")).to_have_text("● live")
    expect(page.locator("#event-count")).to_have_text(f"· {len(envelopes)} events")
    screenshot(page, "conversation")


def test_a_queued_run_shows_its_place_and_thinking_and_errors_are_marked(
    page: Page,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
    screenshot: Shoot,
) -> None:
    submit(open_api, "marks-0", "first in the queue")
    submit(open_api, "marks-1", "FAKE: thinking")
    page.set_viewport_size(PHONE)
    page.goto(session_url(open_gateway.url, "marks-1"))
    expect(page.locator("#session-state")).to_have_text("queued")
    expect(page.locator("#queue-position")).to_have_text("· queue position 2")
    expect(page.locator("#elapsed")).to_contain_text("queued for")
    # Phone-sized: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    start_worker()
    expect(page.locator(".row-finished")).to_contain_text("succeeded")
    thinking = page.locator("details.thinking")
    expect(thinking).not_to_have_attribute("open", "")
    thinking.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(thinking).to_have_attribute("open", "")
    expect(page.locator("#session-state")).to_have_text("idle")
    expect(page.locator("#queue-position")).to_have_text("")

    submit(open_api, "marks-1", "FAKE: error_result")
    expect(page.locator(".row-finished").nth(1)).to_contain_text("failed")
    error = page.locator(".note-error")
    expect(error).to_contain_text("Error: result_error")
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator(".row-result").nth(1)).to_contain_text("Result (error)")
    screenshot(page, "phone")
