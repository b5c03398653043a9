"""Run the gateway under uvicorn; refuse an open gateway beyond loopback."""

from __future__ import annotations

import ipaddress
import logging

import structlog
import uvicorn

from gateway.gcpolicy import tune_for_serving
from shared.logging import configure_logging
from shared.settings import Settings
from shared.urls import redact_url

log = structlog.get_logger(__name__)

FACTORY = "gateway.app:app_from_environment"
GRACEFUL_SHUTDOWN_S = 10


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(settings: Settings, host: str, insecure: bool) -> str | None:
    """Why the gateway must not listen on `host` (one line), or None if it may."""
    if settings.api_keys or insecure or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without API keys: set CLAUDE_QUEUE_API_KEYS, "
        "or pass --insecure to let anyone who can reach it do everything"
    )


class _RedactQuery(logging.Filter):
    """Access log lines never show a `?token=` (or other secret-looking) query value."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_url(args[2]), *args[3:])
        return True


def configure_process(settings: Settings) -> None:
    """A serving process: the project's structured log lines (uvicorn's included), and
    full garbage collections on a timer, not mid-stream (gateway/gcpolicy.py)."""
    configure_logging(settings)
    import gateway.app  # noqa: F401  # what it imports is built once: frozen with the rest

    tune_for_serving()
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactQuery) for f in access.filters):
        access.addFilter(_RedactQuery())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def run(settings: Settings, *, host: str, port: int, workers: int = 1, insecure: bool) -> None:
    """Serve until stopped. With workers > 1, each process builds its app from the
    environment (uvicorn's factory mode), which is where these settings came from."""
    configure_process(settings)
    if not settings.api_keys and not is_loopback(host):
        log.warning("gateway_insecure", host=host, insecure=insecure)
    common = {
        "host": host,
        "port": port,
        "log_config": None,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "proxy_headers": False,
    }
    if workers > 1:
        uvicorn.run(FACTORY, factory=True, workers=workers, **common)  # type: ignore[arg-type]
        return
    from gateway.app import create_app

    uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
