"""GET /v1/sessions/{session_id}/events: the session's events as Server-Sent Events."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query

from gateway.auth import Principal
from gateway.errors import invalid
from gateway.feed import HubFeed
from gateway.routes_runs import SessionId
from gateway.sse import FeedResponse
from gateway.state import Gateway, error_responses
from gateway.tokens import Scope
from shared.ids import RUN_ID_PATTERN

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An event stream: one frame per envelope (`id: <seq>`, "
        "`event: <type>`, `data: <envelope JSON>`), and comment heartbeats.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def start_after(after: int, last_event_id: str | None) -> int:
    """Where to resume: the Last-Event-ID a reconnecting client sends wins over ?after=."""
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not text.isascii() or not text.isdigit():
        raise invalid(
            "invalid Last-Event-ID",
            {"Last-Event-ID": f"{last_event_id!r} is not a seq (a whole number >= 0)"},
        )
    return int(text)


def events_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(tags=["events"])
    settings = gateway.settings

    @router.get(
        "/v1/sessions/{session_id}/events",
        summary="Stream the session's events",
        status_code=200,
        response_class=FeedResponse,
        responses={**_STREAM_DOC, **error_responses(401, 403, 422)},
    )
    async def stream_events(
        principal: Annotated[Principal, Depends(gateway.auth.require_scope(Scope.READ))],
        session_id: SessionId,
        after: Annotated[int, Query(ge=0, description="Replay after this seq.")] = 0,
        until: Annotated[
            Literal["finished"] | None,
            Query(description="`finished`: close after the next finished event."),
        ] = None,
        run_id: Annotated[
            str | None,
            Query(
                pattern=RUN_ID_PATTERN,
                description="Only this run's events (with until: its finished).",
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(description="Sent by a reconnecting EventSource; wins over `after`."),
        ] = None,
    ) -> FeedResponse:
        """Replay the session's log after `after` (or Last-Event-ID), then follow it live:
        every event once, in seq order, with no gap. A client that falls
        CLAUDE_QUEUE_SSE_CLIENT_BUFFER events behind is disconnected; it resumes by
        reconnecting with the last id it received."""
        del principal
        feed = HubFeed(
            gateway.hubs,
            stats=gateway.stats,
            session_id=session_id,
            after=start_after(after, last_event_id),
            stop_at_finish=until == "finished",
            run_id=run_id,
        )
        return FeedResponse(feed, heartbeat_s=settings.sse_heartbeat_s)

    return router
