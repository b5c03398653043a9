"""Fixtures of the console tests: the gateway tests' real `serve` processes (reused),
and a real headless Chromium (Debian's, driven by Playwright; no browser download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.gateway.conftest import (
    HTTP_TIMEOUT_S,
    GatewayFactory,
    api,
    gateway,
    gateway_settings,
    start_gateway,
)
from tests.gateway.server import Server

__all__ = ["api", "gateway", "gateway_settings", "start_gateway"]

PAGE_TIMEOUT_MS = 30_000  # a safety net: expectations wait on the page, not on time
PHONE: ViewportSize = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module; each test gets its own context. Not per
    session: while Playwright's sync API is open, its event loop runs in this thread,
    and other tiers' asyncio.run() would refuse to start."""
    path = chromium_path()
    if path is None:
        message = "no chromium on PATH: the console's browser tests did not run (make chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def open_gateway(start_gateway: GatewayFactory) -> Server:
    """A gateway without API keys (loopback): every request is allowed."""
    return start_gateway(api_keys=())


@pytest.fixture
def open_api(open_gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_gateway.url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


class PageErrors:
    """What went wrong in a page: uncaught exceptions and console errors (CSP included)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_error(self, error: Error) -> None:
        self.errors.append(f"pageerror: {error}")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


def new_page(browser: Browser, errors: PageErrors, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("pageerror", errors.on_error)
    page.on("console", errors.on_console)
    return page


Shoot = Callable[..., None]


@pytest.fixture
def screenshot() -> Shoot:
    """Save a screenshot of the page as <name>.png in the folder CONSOLE_SCREENSHOTS
    names (how docs/console/ is made), or do nothing when it is unset."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")

    def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=Path(folder) / f"{name}.png", full_page=full_page)

    return shoot


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(
    browser: Browser, page_errors: PageErrors, start_gateway: GatewayFactory
) -> Iterator[Page]:
    """A fresh tab; the test fails if the page threw or logged an error (a refused
    request, e.g. a 401, is logged by Chromium: tests expecting one clear the list).
    It closes before the test's gateways stop (it depends on their factory)."""
    del start_gateway
    tab = new_page(browser, page_errors)
    yield tab
    tab.context.close()
    assert page_errors.errors == []
