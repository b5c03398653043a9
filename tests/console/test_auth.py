"""Credentials in the console: an API key asked for once and kept in sessionStorage; a
`#token=` link that shows its one session only."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import WorkerFactory
from tests.console.conftest import PageErrors
from tests.console.support import session_url, submit, wait_finished
from tests.gateway.server import API_KEY, Server
from tests.gateway.support import mint_token

pytestmark = pytest.mark.slow
REFUSED = "console: Failed to load resource: the server responded with a status of {}"


def test_the_api_key_is_asked_for_once_and_kept_for_the_tab(
    page: Page, page_errors: PageErrors, gateway: Server, api: httpx.Client
) -> None:
    submit(api, "keyed-1", "hello")
    page.goto(f"{gateway.url}/ui/")
    form = page.get_by_role("form", name="API key")
    expect(form).to_be_visible()
    page.get_by_label("Key", exact=True).fill("not-the-key")
    page.keyboard.press("Enter")
    expect(form).to_contain_text("That key was refused")
    page.get_by_label("Key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Use key").click()

    expect(page.locator('tr[data-session="keyed-1"]')).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('claude-queue.api-key')") == API_KEY
    assert page.evaluate("localStorage.length") == 0
    expect(page.locator("#who")).to_have_text("API key")
    page.reload()
    expect(page.locator('tr[data-session="keyed-1"]')).to_be_visible()
    expect(page.get_by_role("form", name="API key")).to_have_count(0)

    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_role("form", name="API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    # Each refusal (the first visit, the wrong key, after forgetting) logged one 401.
    assert page_errors.errors == [REFUSED.format("401 (Unauthorized)")] * 3
    page_errors.errors.clear()


def test_a_token_link_shows_its_session_only(
    page: Page,
    page_errors: PageErrors,
    gateway: Server,
    api: httpx.Client,
    start_worker: WorkerFactory,
) -> None:
    start_worker()
    mine = submit(api, "token-mine", 'FAKE: text text="for the token"')
    submit(api, "token-other", "secret")
    wait_finished(api, "token-mine", mine["run_id"])
    token = mint_token(api, "token-mine", ["read", "approve"])["token"]

    page.goto(session_url(gateway.url, "token-mine", f"#token={token}"))
    expect(page.locator(".row-text")).to_have_text("for the token")
    expect(page.locator("#who")).to_have_text("session token for token-mine")
    assert token not in page.url and "#" not in page.url  # out of the address bar
    # Without the submit and cancel scopes, those actions are not offered.
    expect(page.get_by_role("form", name="Follow-up prompt")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel now")).to_have_count(0)

    page.goto(session_url(gateway.url, "token-other"))
    expect(page.get_by_role("alert")).to_have_text("This link opens session token-mine only.")
    expect(page.locator(".row")).to_have_count(0)
    # The gateway refuses it too (the page's check is a courtesy, not the guard).
    status = page.evaluate(
        """async (token) => (await fetch("/v1/sessions/token-other",
            {headers: {Authorization: "Bearer " + token}})).status""",
        token,
    )
    assert status == 403
    assert page_errors.errors == [REFUSED.format("403 (Forbidden)")]
    page_errors.errors.clear()

    page.goto(f"{gateway.url}/ui/")  # the list: this token may only see its session
    expect(page).to_have_url(session_url(gateway.url, "token-mine"))
    expect(page.locator(".row-text")).to_have_text("for the token")
