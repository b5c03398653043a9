"""Actions from the page, in a real Chromium: answer a permission request (Allow, Deny),
cancel a run and see its process tree die, send a follow-up with the keyboard only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from producer.client import Client
from tests.conftest import WorkerFactory
from tests.console.conftest import Shoot
from tests.console.support import session_url, submit, wait_finished
from tests.gateway.server import Server
from tests.helpers import kill_if_alive, until_grandchild
from worker.proctree import is_alive

pytestmark = pytest.mark.slow


def _ask(open_api: httpx.Client, session_id: str, touch: Path) -> dict[str, str]:
    return submit(
        open_api, session_id, f"FAKE: ask tool=Bash command=true n=1 touch={touch}", profile="ask"
    )


def test_allow_a_tool_call_from_the_page_and_see_it_happen(
    page: Page,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
    tmp_path: Path,
    screenshot: Shoot,
) -> None:
    start_worker()
    side_effect = tmp_path / "allowed.txt"
    run = _ask(open_api, "ask-allow", side_effect)
    page.goto(session_url(open_gateway.url, "ask-allow"))

    card = page.locator(".request-card")
    expect(card).to_be_visible()
    expect(card.locator("h2")).to_have_text("Claude asks to use Bash")
    expect(card.locator("pre")).to_contain_text('"command": "true"')
    expect(card).to_contain_text("Expires")
    expect(page.locator("#session-state")).to_have_text("running")
    expect(page.locator("#queue-position")).to_have_text("")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "permission-request", full_page=False)
    card.get_by_role("button", name="Allow").click()

    expect(page.locator("[data-outcome=answer]")).to_have_text("Allow: Delivered to the run")
    expect(page.locator(".row-request .decision")).to_have_text(
        "Allowed by unauthenticated (answered)"
    )
    expect(page.locator(".row-finished")).to_contain_text("succeeded")
    expect(page.locator(".request-card")).to_have_count(0)  # no longer pending
    wait_finished(open_api, "ask-allow", run["run_id"])
    assert side_effect.read_text() == "1 true\n"


def test_deny_a_tool_call_with_a_message(
    page: Page,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    start_worker()
    side_effect = tmp_path / "denied.txt"
    run = _ask(open_api, "ask-deny", side_effect)
    page.goto(session_url(open_gateway.url, "ask-deny"))

    card = page.locator(".request-card")
    card.get_by_label("Message").fill("not on production")
    page.keyboard.press("Tab")
    expect(card.get_by_role("button", name="Allow")).to_be_focused()
    page.keyboard.press("Tab")
    expect(card.get_by_role("button", name="Deny")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.locator("[data-outcome=answer]")).to_have_text("Deny: Delivered to the run")
    expect(page.locator(".row-request .decision")).to_have_text(
        "Denied by unauthenticated (answered): not on production"
    )
    expect(page.locator(".row-tool pre").nth(1)).to_contain_text("not on production")
    expect(page.locator(".row-text").last).to_contain_text("denied: not on production")
    envelopes = wait_finished(open_api, "ask-deny", run["run_id"])
    assert envelopes[-1]["data"]["status"] == "succeeded"
    assert not side_effect.exists()


def test_cancel_from_the_page_kills_the_process_tree(
    page: Page, open_gateway: Server, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    handle = client.submit(prompt="FAKE: grandchild seconds=300", session_id="cancel-1")
    cli_pid, grandchild_pid = until_grandchild(handle)
    try:
        page.goto(session_url(open_gateway.url, "cancel-1"))
        expect(page.locator("#session-state")).to_have_text("running")
        expect(page.locator("#elapsed")).to_contain_text("running for")
        page.get_by_role("button", name="Cancel now").click()

        expect(page.locator("[data-outcome=cancel]")).to_have_text(
            f"Cancelled the running run ({handle.run_id})"
        )
        expect(page.locator(".row-finished")).to_contain_text("interrupted")
        # The answer came once the worker ended the run: its whole tree is gone.
        assert not is_alive(cli_pid)
        assert not is_alive(grandchild_pid)
    finally:
        kill_if_alive(cli_pid, grandchild_pid)

    page.get_by_role("button", name="Soft cancel").click()
    expect(page.locator("[data-outcome=cancel]")).to_have_text("Nothing to cancel")


def test_a_follow_up_sent_with_the_keyboard_only(
    page: Page, open_gateway: Server, open_api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    first = submit(open_api, "follow-1", 'FAKE: text text="first answer"')
    wait_finished(open_api, "follow-1", first["run_id"])
    page.goto(session_url(open_gateway.url, "follow-1"))
    expect(page.locator(".answer")).to_have_text("first answer")

    page.locator("#prompt").focus()
    page.keyboard.type('FAKE: text text="second answer"')
    page.keyboard.press("Tab")  # the on-busy choice
    page.keyboard.press("ArrowDown")  # reject
    page.keyboard.press("Tab")  # profile
    page.keyboard.press("Tab")  # Send
    expect(page.locator("form[aria-label='Follow-up prompt'] button")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.locator("[data-outcome=submit]")).to_contain_text("Queued run ")
    expect(page.locator(".row-run")).to_have_count(2)
    expect(page.locator(".answer").nth(1)).to_have_text("second answer")
    expect(page.locator(".prompt-text").nth(1)).to_have_text('FAKE: text text="second answer"')
    assert page.locator("#prompt").input_value() == ""
