"""How the console's page is served when the gateway is mounted under a prefix."""

from __future__ import annotations

import sys

import httpx

from console import CONTENT_SECURITY_POLICY
from shared.settings import Settings
from tests.gateway.server import start_server

FACTORY = [sys.executable, "-m", "uvicorn", "--factory", "tests.console.mounted:app"]


def test_the_page_names_its_mount_point_as_its_base(settings: Settings) -> None:
    server = start_server(settings, argv=[*FACTORY, "--port", "{port}"])
    try:
        with httpx.Client(base_url=server.url) as http:
            page = http.get("/claude/ui/sessions/s-1")
            assert page.status_code == 200
            assert '<base href="/claude/ui/">' in page.text
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert http.get("/claude/ui/static/js/app.js").status_code == 200
            assert http.get("/claude/v1/sessions").status_code == 200  # no keys: open
            assert http.get("/claude/ui/static/%2e%2e/web.py").status_code == 404
    finally:
        server.stop()
