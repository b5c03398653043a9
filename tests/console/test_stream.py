"""Following a session in a real Chromium: a reload or a lost network mid-run leaves no
duplicate and no gap; untrusted text stays text; 10,000 events keep the page light."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import WorkerFactory
from tests.console.conftest import PageErrors
from tests.console.proxy import CuttableProxy
from tests.console.support import session_url, submit, wait_finished
from tests.gateway.server import Server
from tests.gateway.sse import read_frames

pytestmark = pytest.mark.slow
ROWS_IN_DOM = 200  # console/static/js/rowlist.js PAGE_ROWS


def rendered(page: Page) -> list[tuple[int, int]]:
    """(seq, block) of every row on the page, in page order (block -1: a whole event)."""
    pairs: list[list[int]] = page.eval_on_selector_all(
        ".rows > .row",
        "nodes => nodes.map(n => [Number(n.dataset.seq), Number(n.dataset.block ?? -1)])",
    )
    return [(seq, block) for seq, block in pairs]


def expected_rows(envelopes: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The rows a session's events make: one per event, one per content block of a
    message; none for `started` (it updates its run's header)."""
    rows: list[tuple[int, int]] = []
    for envelope in envelopes:
        if envelope["type"] == "message":
            rows += [(envelope["seq"], i) for i in range(len(envelope["data"]["content"]))]
        elif envelope["type"] != "started":
            rows.append((envelope["seq"], -1))
    return rows


def history(api: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    frames = read_frames(api, session_id, params={"after": 0, "until": "finished"})
    return [frame.envelope for frame in frames]


def test_a_reload_mid_run_shows_every_event_once(
    page: Page, open_gateway: Server, open_api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    run = submit(open_api, "reload-1", "FAKE: slow n=30 delay_ms=100")
    page.goto(session_url(open_gateway.url, "reload-1"))
    expect(page.locator(".row-text").nth(4)).to_be_visible()
    expect(page.locator("#live")).to_have_text("● live")
    page.reload()
    expect(page.locator(".row-finished")).to_contain_text("succeeded")

    envelopes = history(open_api, "reload-1")
    assert envelopes[-1]["run_id"] == run["run_id"]
    assert rendered(page) == expected_rows(envelopes)
    expect(page.locator("#event-count")).to_have_text(f"· {len(envelopes)} events")


def test_a_lost_connection_resumes_from_the_last_event_with_no_gap(
    page: Page,
    page_errors: PageErrors,
    open_gateway: Server,
    open_api: httpx.Client,
    start_worker: WorkerFactory,
) -> None:
    proxy = CuttableProxy(open_gateway.port).start()
    try:
        start_worker()
        submit(open_api, "offline-1", "FAKE: slow n=40 delay_ms=100")
        page.goto(session_url(proxy.url, "offline-1"))
        expect(page.locator(".row-text").nth(2)).to_be_visible()
        proxy.cut()
        expect(page.locator("#live")).not_to_have_text("● live")  # it noticed
        expect(page.locator(".row-finished")).to_contain_text("succeeded")
        expect(page.locator("#live")).to_have_text("● live")
        rows = rendered(page)
        page.goto("about:blank")  # stop polling before the proxy goes
    finally:
        proxy.close()

    envelopes = history(open_api, "offline-1")
    assert rows == expected_rows(envelopes)
    # The reconnect asked for what came after the last event it had (Last-Event-ID).
    streams = [
        head.decode(errors="replace").lower()
        for head in proxy.heads
        if head.startswith(b"GET /v1/sessions/offline-1/events")
    ]
    assert len(streams) >= 2
    assert "last-event-id" not in streams[0]
    resumed_after = int(streams[1].split("last-event-id: ")[1].split("\r\n")[0])
    assert 3 <= resumed_after < envelopes[-1]["seq"]
    # A poll cut mid-flight is logged by Chromium as a failed load: the only errors allowed.
    assert all("net::ERR_" in error for error in page_errors.errors), page_errors.errors
    page_errors.errors.clear()


def test_html_in_a_prompt_and_an_answer_stays_text(
    page: Page, open_gateway: Server, open_api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    prompt = (
        "<img src=x onerror=\"document.title='pwned'\"> **bold** "
        "[click](javascript:document.title='pwned') <script>document.title='pwned'</script>"
    )
    run = submit(open_api, "xss-1", prompt)
    wait_finished(open_api, "xss-1", run["run_id"])
    page.goto(session_url(open_gateway.url, "xss-1"))

    expect(page.locator(".prompt-text")).to_have_text(prompt)
    answer = page.locator(".row-text")
    expect(answer).to_contain_text("<img src=x onerror=")
    expect(answer.locator("strong")).to_have_text("bold")  # Markdown, rendered safely
    expect(answer).to_contain_text("[click](javascript:")  # not a link
    assert page.locator("main img, main script, main a").count() == 0
    assert page.title() == "claude-queue console"


def test_ten_thousand_events_keep_the_page_light_and_answering(
    page: Page, open_gateway: Server, open_api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    run = submit(open_api, "big-1", "FAKE: many n=10000 rate=0 size=40")
    envelopes = wait_finished(open_api, "big-1", run["run_id"])
    assert len(envelopes) > 10_000

    page.goto(session_url(open_gateway.url, "big-1"))
    expect(page.locator("#event-count")).to_have_text(f"· {len(envelopes):,} events")
    expect(page.locator(".row-finished")).to_contain_text("succeeded")
    rows = rendered(page)
    assert len(rows) == ROWS_IN_DOM
    assert rows == expected_rows(envelopes)[-ROWS_IN_DOM:]
    assert page.evaluate("document.getElementsByTagName('*').length") < 3000

    earlier = page.get_by_role("button", name="Show earlier events")
    hidden = len(expected_rows(envelopes)) - ROWS_IN_DOM
    expect(earlier).to_have_text(f"Show earlier events ({hidden:,} hidden)")
    earlier.click()  # the page still answers a click
    expect(earlier).to_have_text(f"Show earlier events ({hidden - ROWS_IN_DOM:,} hidden)")
    assert rendered(page) == expected_rows(envelopes)[-2 * ROWS_IN_DOM :]
    page.locator("#prompt").fill("still typing")
    expect(page.locator("#prompt")).to_have_value("still typing")


def test_partial_text_streams_in_then_gives_way_to_the_message(
    page: Page, open_gateway: Server, open_api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    submit(open_api, "partial-1", "FAKE: partial n=8 delay_ms=250", include_partial_messages=True)
    page.goto(session_url(open_gateway.url, "partial-1"))
    streaming = page.locator("#streaming")
    expect(streaming).to_be_visible()  # deltas arrive before the whole message
    expect(streaming).not_to_have_text("")
    expect(page.locator(".row-finished")).to_contain_text("succeeded")
    expect(streaming).to_be_hidden()
    text = page.locator(".row-text")
    expect(text).to_have_count(1)
    assert text.inner_text().strip()
