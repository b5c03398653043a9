"""Serving the console: its page at /ui/ and /ui/sessions/{id}, its files under /ui/static/.

Every answer carries a strict Content-Security-Policy: scripts and styles only from the
console's own files (no inline script, no eval), requests only to the same origin. The
page is one HTML file for every route (the script reads the path); its `<base href>`
is the mount point, so the console works wherever the gateway is mounted.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
BASE_MARK: Final = "__CONSOLE_BASE__"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'self'; form-action 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """ASGI middleware: the console's security headers on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_app() -> ASGIApp:
    """The console as an ASGI app, to mount at /ui (the gateway does)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if BASE_MARK not in page:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} lacks its base mark {BASE_MARK}")

    async def index(request: Request) -> Response:
        # root_path is where the console is mounted (set by the server, not the client).
        base = str(request.scope.get("root_path", "")).rstrip("/") + "/"
        return HTMLResponse(
            page.replace(BASE_MARK, html.escape(base, quote=True)),
            headers={"Cache-Control": "no-store"},
        )

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("not found", status_code=404)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/sessions/{session_id:path}", index, methods=["GET", "HEAD"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={404: not_found},
    )
    return SecurityHeaders(app)
