"""Exceptions raised by the producer API.

ClaudeQueueError
├── InvalidJobError     (also a ValueError): the job was refused, nothing was queued
├── SessionBusy         the session has a run pending and the caller asked not to wait
├── StreamTimeout       (also a TimeoutError): stream(timeout_s=...) ran out
├── StreamEnded         a run's stream ended before its `finished` event
├── RedisUnavailable    (also a ConnectionError): Redis did not answer
└── SettingsError       (also a ValueError; shared.envnames): bad CLAUDE_QUEUE_* configuration

Redis connection failures never reach callers as redis-py classes: the client's
public methods turn them into RedisUnavailable (see `redis_errors`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any, TypeVar, cast

import redis

from shared.envnames import SettingsError
from shared.errors import ClaudeQueueError
from shared.settings import Settings
from shared.urls import redact_url

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ClaudeQueueError",
    "InvalidJobError",
    "RedisUnavailable",
    "SessionBusy",
    "SettingsError",
    "StreamEnded",
    "StreamTimeout",
    "redis_errors",
]


class InvalidJobError(ClaudeQueueError, ValueError):
    """The job failed validation; the message names each bad field. Nothing was queued."""


class SessionBusy(ClaudeQueueError):
    """The session has a run queued or running, and the caller asked not to wait."""


class StreamTimeout(ClaudeQueueError, TimeoutError):
    """A stream did not reach its stopping point within its time limit."""


class StreamEnded(ClaudeQueueError):
    """A run's stream ended before its `finished` event (session deleted or expired, no follow)."""


class RedisUnavailable(ClaudeQueueError, ConnectionError):
    """Redis did not answer (refused, dropped, timed out); the message names it, redacted."""

    def __init__(self, url: str | None, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach Redis at {url or 'the configured Redis'}: {reason}")

    @classmethod
    def from_error(cls, exc: BaseException, url: str | None = None) -> RedisUnavailable:
        """The project's error for a redis-py or socket failure; no credential survives."""
        reason = redact_url(str(exc)) or type(exc).__name__
        return cls(None if url is None else redact_url(url), reason)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, ClaudeQueueError):  # StreamTimeout is an OSError too: ours, keep it
        return False
    # redis-py wraps socket failures in its own classes; OSError covers those it does not.
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)


def _url_of(owner: object) -> str | None:
    """The redacted Redis URL of a client (or of a handle's client), if it has one."""
    settings = getattr(owner, "settings", None)
    if settings is None:
        settings = getattr(getattr(owner, "client", None), "settings", None)
    return settings.redis_url_redacted if isinstance(settings, Settings) else None


class RedisErrors:
    """Turns Redis connection failures into RedisUnavailable; see `redis_errors`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and _unavailable(exc):
            raise RedisUnavailable.from_error(exc, self.url) from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def __call__(self, method: F) -> F:
        """Wrap a client method: plain, coroutine, generator or async generator alike."""
        fixed = self.url

        def errors_of(args: tuple[Any, ...]) -> RedisErrors:
            return RedisErrors(fixed if fixed is not None or not args else _url_of(args[0]))

        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                inner = method(*args, **kwargs)
                with errors_of(args):
                    try:
                        async for item in inner:
                            yield item
                    finally:
                        await inner.aclose()  # `async for` alone would leave it to the GC

            return cast(F, agen)
        if inspect.isgeneratorfunction(method):

            @functools.wraps(method)
            def gen(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                with errors_of(args):
                    return (yield from method(*args, **kwargs))

            return cast(F, gen)
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def coro(*args: Any, **kwargs: Any) -> Any:
                with errors_of(args):
                    return await method(*args, **kwargs)

            return cast(F, coro)

        @functools.wraps(method)
        def plain(*args: Any, **kwargs: Any) -> Any:
            with errors_of(args):
                return method(*args, **kwargs)

        return cast(F, plain)


def redis_errors(url: str | None = None) -> RedisErrors:
    """Redis connection failures become RedisUnavailable, naming the (redacted) URL.

    As a context manager (`with` or `async with`) around Redis calls, or as a
    decorator of a client method (`@redis_errors()`), where the URL comes from the
    client's settings and generators are covered for their whole iteration.
    """
    return RedisErrors(url)
