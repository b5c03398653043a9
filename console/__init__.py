"""The web console: static pages the gateway serves at /ui/ (a client of its public API)."""

from console.web import CONTENT_SECURITY_POLICY, console_app

__all__ = ["CONTENT_SECURITY_POLICY", "console_app"]
