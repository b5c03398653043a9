"""The HTTP gateway: claude-queue over HTTP (JSON, and Server-Sent Events for streams).

    from gateway import create_app
    app = create_app(Settings.from_environment())

`claude-queue serve` runs it under uvicorn. See the README's "HTTP gateway" section.
"""

from gateway.app import create_app

__all__ = ["create_app"]
