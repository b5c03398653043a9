"""Fixtures of the gateway tests: a real `claude-queue serve` process and HTTP clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from shared.settings import Settings
from tests.gateway.server import API_KEY, TOKEN_SECRET, Server, start_server

GatewayFactory = Callable[..., Server]
HTTP_TIMEOUT_S = 60.0


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    """The test settings plus one API key and a token secret."""
    return settings.model_copy(
        update={"api_keys": (SecretStr(API_KEY),), "token_secret": SecretStr(TOKEN_SECRET)}
    )


@pytest.fixture
def start_gateway(gateway_settings: Settings) -> Iterator[GatewayFactory]:
    """Start gateway processes (`serve` on a loopback port); all are stopped after the test."""
    started: list[Server] = []

    def start(args: Sequence[str] = (), **overrides: Any) -> Server:
        settings = Settings(**{**dict(gateway_settings), **overrides})  # validated again
        server = start_server(settings, args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        print(f"--- gateway on port {server.port} ---\n{server.log()}")
    hung = [server.port for server in started if server.killed]
    assert not hung, f"gateways on ports {hung} did not exit on SIGTERM (SIGKILLed)"


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> Server:
    return start_gateway()


@pytest.fixture
def api(gateway: Server) -> Iterator[httpx.Client]:
    """An HTTP client that sends the API key."""
    with httpx.Client(
        base_url=gateway.url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=HTTP_TIMEOUT_S,
    ) as client:
        yield client
