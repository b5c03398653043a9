"""producer's public API: what `__all__` exports, the one error tree, RedisUnavailable."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

import producer
from producer import AsyncClient, ClaudeQueueError, Client, RedisUnavailable, StreamTimeout
from producer import errors as errors_module
from producer.errors import redis_errors
from shared.settings import Settings

PASSWORD = "hunter2-secret"


@pytest.fixture
def closed_url() -> str:
    """A Redis URL (with a password) on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://admin:{PASSWORD}@127.0.0.1:{port}/0"


def _public_classes() -> list[type]:
    return [obj for name in producer.__all__ if isinstance(obj := getattr(producer, name), type)]


def test_every_exported_name_exists_once_and_in_order() -> None:
    assert producer.__all__ == sorted(set(producer.__all__))
    namespace: dict[str, Any] = {}
    exec("from producer import *", namespace)  # noqa: S102 - the star import users may write
    assert set(producer.__all__) <= set(namespace)


@pytest.mark.parametrize(
    "name",
    [
        "Client",
        "AsyncClient",
        "RunHandle",
        "AsyncRunHandle",
        "PromptJob",
        "Envelope",
        "FinishedData",
        "RunStatus",
        "RunResult",
        "CancelResult",
        "CancelOutcome",
        "QueueStatus",
        "WorkerInfo",
        "SessionInfo",
        "SessionState",
        "RedisUnavailable",
        "SessionBusy",
        "InvalidJobError",
        "StreamTimeout",
        "StreamEnded",
    ],
)
def test_what_a_user_needs_is_exported(name: str) -> None:
    assert name in producer.__all__


def test_every_public_error_is_in_the_one_tree() -> None:
    errors = [cls for cls in _public_classes() if issubclass(cls, BaseException)]
    module_errors = [
        obj
        for obj in vars(errors_module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert len(errors) >= 6
    for cls in {*errors, *module_errors}:
        assert issubclass(cls, ClaudeQueueError), cls
        # The tree drawn at the top of the module names every error.
        assert errors_module.__doc__ is not None
        assert re.search(rf"\b{cls.__name__}\b", errors_module.__doc__), cls


def test_redis_unavailable_is_ours_and_a_connection_error() -> None:
    assert issubclass(RedisUnavailable, ConnectionError)
    assert not issubclass(RedisUnavailable, redis.RedisError)


def test_translated_errors_hide_credentials_and_keep_the_cause() -> None:
    cause = redis.ConnectionError(f"Error connecting to redis://u:{PASSWORD}@h:1/0")
    with pytest.raises(RedisUnavailable) as info, redis_errors(f"redis://u:{PASSWORD}@h:1/0"):
        raise cause
    assert PASSWORD not in str(info.value)
    assert "h:1" in str(info.value)
    assert info.value.__cause__ is cause


@pytest.mark.parametrize(
    "error", [redis.TimeoutError("slow"), ConnectionResetError("reset"), redis.BusyLoadingError()]
)
def test_every_kind_of_outage_is_translated(error: BaseException) -> None:
    with pytest.raises(RedisUnavailable), redis_errors():
        raise error


@pytest.mark.parametrize(
    "error", [StreamTimeout("ours"), redis.ResponseError("WRONGTYPE"), ValueError("bug")]
)
def test_other_errors_pass_through_unchanged(error: BaseException) -> None:
    with pytest.raises(type(error)) as info, redis_errors():
        raise error
    assert info.value is error


class _Owner:
    """Stands in for a client: the decorator reads the URL from its settings."""

    def __init__(self, url: str) -> None:
        self.settings = Settings(redis_url=url)
        self.closed: list[str] = []

    @redis_errors()
    def items(self) -> Iterator[int]:
        try:
            yield 1
            raise redis.ConnectionError("dropped")
        finally:
            self.closed.append("sync")

    @redis_errors()
    async def aitems(self) -> AsyncGenerator[int, None]:
        try:
            yield 1
            raise redis.ConnectionError("dropped")
        finally:
            self.closed.append("async")


def test_decorated_generators_translate_mid_iteration(closed_url: str) -> None:
    owner = _Owner(closed_url)
    items = owner.items()
    assert next(items) == 1
    with pytest.raises(RedisUnavailable, match=r"127\.0\.0\.1"):
        next(items)

    async def scenario() -> None:
        aitems = owner.aitems()
        assert await anext(aitems) == 1
        with pytest.raises(RedisUnavailable):
            await anext(aitems)

    asyncio.run(scenario())
    assert owner.closed == ["sync", "async"]


def test_closing_a_decorated_async_generator_closes_the_wrapped_one(closed_url: str) -> None:
    owner = _Owner(closed_url)

    async def scenario() -> None:
        aitems = owner.aitems()
        assert await anext(aitems) == 1
        await aitems.aclose()  # a consumer that stops early: the inner finally must run now

    asyncio.run(scenario())
    assert owner.closed == ["async"]


def _assert_unavailable(error: pytest.ExceptionInfo[RedisUnavailable], url: str) -> None:
    text = str(error.value)
    assert PASSWORD not in text
    assert url.rsplit("@", 1)[1].split("/", maxsplit=1)[0] in text  # host:port named


SYNC_CALLS: dict[str, Callable[[Client], object]] = {
    "status": lambda c: c.status(),
    "submit": lambda c: c.submit(session_id="s1", prompt="hi"),
    "stream": lambda c: next(iter(c.stream("s1", timeout_s=0.3))),
    "delete_session": lambda c: c.delete_session("s1"),
    "sessions": lambda c: c.sessions(),
    "session": lambda c: c.session("s1"),
    "cancel": lambda c: c.cancel("s1"),
}


@pytest.mark.parametrize("call", SYNC_CALLS.values(), ids=SYNC_CALLS.keys())
def test_sync_client_raises_redis_unavailable(
    closed_url: str, call: Callable[[Client], object]
) -> None:
    with Client.from_url(closed_url) as client, pytest.raises(RedisUnavailable) as info:
        call(client)
    _assert_unavailable(info, closed_url)


async def _first(stream: AsyncIterator[Any]) -> Any:
    async for item in stream:
        return item
    return None


ASYNC_CALLS: dict[str, Callable[[AsyncClient], Awaitable[object]]] = {
    "status": lambda c: c.status(),
    "submit": lambda c: c.submit(session_id="s1", prompt="hi"),
    "stream": lambda c: _first(c.stream("s1", timeout_s=0.3)),
    "delete_session": lambda c: c.delete_session("s1"),
    "sessions": lambda c: c.sessions(),
    "session": lambda c: c.session("s1"),
    "cancel": lambda c: c.cancel("s1"),
}


@pytest.mark.parametrize("call", ASYNC_CALLS.values(), ids=ASYNC_CALLS.keys())
def test_async_client_raises_redis_unavailable(
    closed_url: str, call: Callable[[AsyncClient], Awaitable[object]]
) -> None:
    async def scenario() -> None:
        async with AsyncClient.from_url(closed_url) as client:
            with pytest.raises(RedisUnavailable) as info:
                await call(client)
            _assert_unavailable(info, closed_url)

    asyncio.run(scenario())
