"""The one way the worker builds an `error` event."""

from __future__ import annotations

from shared.events import ErrorCode, ErrorData, Event, EventType


def error_event(code: ErrorCode, message: str, **detail: object) -> Event:
    """An `error` event: what went wrong (code), for a reader (message), and any detail."""
    return Event(type=EventType.ERROR, data=ErrorData(code=code, message=message, detail=detail))
