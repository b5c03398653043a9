"""The gateway's ASGI app: `create_app(settings) -> FastAPI`.

Serve it with `claude-queue serve`, or mount it in your own app:

    app.mount("/claude", create_app(Settings.from_environment()))

A mounted app gets no lifespan events of its own: close its Redis connections
from your app's shutdown with `await sub_app.state.gateway.aclose()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from console import console_app
from gateway.errors import install_error_handlers
from gateway.routes_events import events_router
from gateway.routes_metrics import metrics_router
from gateway.routes_runs import runs_router
from gateway.routes_sessions import sessions_router
from gateway.routes_system import system_router
from gateway.state import Gateway
from shared.settings import Settings
from shared.version import package_version

log = structlog.get_logger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """A new gateway app for these settings (nothing is read from the environment)."""
    gateway = Gateway.build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = FastAPI(
        title="claude-queue gateway",
        version=package_version(),
        summary="Submit prompts to claude-queue sessions and stream their events over HTTP.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    install_error_handlers(app)
    for router in (
        runs_router(gateway),
        events_router(gateway),
        sessions_router(gateway),
        system_router(gateway),
        metrics_router(gateway),
    ):
        app.include_router(router)
    # The web console (static files; a client of the routes above, nothing more).
    app.mount("/ui", console_app(), name="console")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    if gateway.auth.open:
        log.warning(
            "gateway_without_api_keys",
            note="CLAUDE_QUEUE_API_KEYS is empty: every request is allowed",
        )
    return app


def app_from_environment() -> FastAPI:
    """The factory `claude-queue serve --workers N` gives uvicorn: each process builds
    its settings from CLAUDE_QUEUE_* (already checked by the command)."""
    from gateway.serve import configure_process

    settings = Settings.from_environment()
    configure_process(settings)
    return create_app(settings)
