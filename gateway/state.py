"""What the routes share: settings, the asyncio client, auth, stream counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Path

from gateway.auth import Auth
from gateway.hub import Hubs, RedisSource
from gateway.models import ErrorBody
from gateway.sse import SseStats
from producer.aio import AsyncClient
from producer.sessions import require_session_id
from shared.backoff import reconnect_backoff
from shared.jobs import SESSION_ID_PATTERN
from shared.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    client: AsyncClient
    auth: Auth
    stats: SseStats = field(init=False)
    hubs: Hubs = field(init=False)  # one live stream per followed session (gateway/hub.py)

    def __post_init__(self) -> None:
        self.stats = SseStats(capacity=self.settings.sse_client_buffer)
        self.hubs = Hubs(
            RedisSource(self.client),
            reconnect_backoff(self.settings),
            self.settings.sse_client_buffer,
        )

    @classmethod
    def build(cls, settings: Settings) -> Gateway:
        """No I/O: the client connects on first use."""
        return cls(settings, AsyncClient(settings), Auth(settings))

    async def aclose(self) -> None:
        await self.hubs.aclose()
        await self.client.aclose()


def checked_session_id(
    session_id: Annotated[
        str,
        Path(
            description="Session id: 1 to 128 letters, digits, _ . - (starting with one of the "
            "first two).",
            json_schema_extra={"pattern": SESSION_ID_PATTERN},
        ),
    ],
) -> str:
    """The path's session id; a 422 naming `session_id` (the producer's message) if invalid."""
    require_session_id(session_id)
    return session_id


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route may give (all in the one shape)."""
    about = {
        400: "The body could not be read as JSON.",
        401: "Missing, invalid or expired credentials.",
        403: "A session token used beyond its session or scopes.",
        404: "No such session.",
        409: "The session is busy (on_busy=reject, or delete without force).",
        422: "Invalid input; `fields` names each bad field.",
        503: "Redis did not answer (or tokens are not configured).",
    }
    return {status: {"model": ErrorBody, "description": about[status]} for status in statuses}
