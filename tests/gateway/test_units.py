"""The gateway's pure parts: tokens, error fields, loopback check, request models."""

from __future__ import annotations

import asyncio
from typing import get_args

import pytest
from pydantic import SecretStr

from gateway.errors import GatewayError, fields_of_message
from gateway.feed import HubFeed
from gateway.hub import Hubs
from gateway.models import RunCreate, ScopeName
from gateway.routes_events import start_after
from gateway.serve import bind_refusal, is_loopback
from gateway.sse import SseStats
from gateway.tokens import Scope, TokenError, looks_like_token, mint, verify
from shared.backoff import Backoff
from shared.jobs import PromptJob
from shared.settings import Settings
from tests.gateway.memsource import MemorySource

SECRET = b"unit-test-secret"
NOW = 1_800_000_000.0
READ_SUBMIT = frozenset({Scope.READ, Scope.SUBMIT})

ANY_HOST = "0.0.0.0"  # noqa: S104 (what the gateway is asked to listen on)


def test_a_token_round_trips() -> None:
    token, claims = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)
    assert looks_like_token(token)
    assert token.isascii() and all(c.isalnum() or c in "-_." for c in token)
    assert verify(SECRET, token, now=NOW + 59) == claims
    assert claims.session_id == "s-1"
    assert claims.scopes == READ_SUBMIT
    assert claims.expires_at == int(NOW + 60)


def test_two_tokens_have_their_own_ids() -> None:
    first = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)[1]
    second = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)[1]
    assert first.token_id != second.token_id


def test_an_expired_token_is_refused_as_expired() -> None:
    token, _ = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)
    with pytest.raises(TokenError) as refused:
        verify(SECRET, token, now=NOW + 60)
    assert refused.value.expired


@pytest.mark.parametrize("position", [4, 10, -3])
def test_a_changed_character_breaks_the_token(position: int) -> None:
    token, _ = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)
    index = position % len(token)
    replacement = "A" if token[index] != "A" else "B"
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(TokenError) as refused:
        verify(SECRET, tampered, now=NOW)
    assert not refused.value.expired


@pytest.mark.parametrize("text", ["", "cq1", "cq1..", "cq1.a.b.c", "xx1.a.b", "cq1.!!.??"])
def test_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(TokenError):
        verify(SECRET, text, now=NOW)


def test_only_the_canonical_spelling_verifies() -> None:
    token, _ = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)
    last = token[-1]
    # The last base64 character of 32 bytes carries 2 unused bits: a variant decodes the same.
    variant = (
        token[:-1]
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last) ^ 1
        ]
    )
    with pytest.raises(TokenError):
        verify(SECRET, variant, now=NOW)


def test_another_secret_does_not_verify() -> None:
    token, _ = mint(SECRET, "s-1", READ_SUBMIT, now=NOW, ttl_s=60)
    with pytest.raises(TokenError):
        verify(b"other", token, now=NOW)


def test_minting_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="session id"):
        mint(SECRET, "bad id", READ_SUBMIT, now=NOW, ttl_s=60)
    with pytest.raises(ValueError, match="scope"):
        mint(SECRET, "s", frozenset(), now=NOW, ttl_s=60)
    with pytest.raises(ValueError, match="ttl_s"):
        mint(SECRET, "s", READ_SUBMIT, now=NOW, ttl_s=0)


def test_invalid_job_messages_become_fields() -> None:
    assert fields_of_message("invalid job: prompt: too short; max_turns: too big") == {
        "prompt": "too short",
        "max_turns": "too big",
    }
    assert fields_of_message("session_id: 'x y' is not a session id") == {
        "session_id": "'x y' is not a session id"
    }
    assert fields_of_message("invalid answer: message: too long") == {"message": "too long"}
    assert fields_of_message("pass either a PromptJob or keyword fields, not both") == {}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        (ANY_HOST, False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bind_refusal() -> None:
    open_settings = Settings()
    keyed = Settings(api_keys=(SecretStr("k"),))
    assert bind_refusal(open_settings, ANY_HOST, insecure=False) is not None
    assert bind_refusal(open_settings, ANY_HOST, insecure=True) is None
    assert bind_refusal(open_settings, "127.0.0.1", insecure=False) is None
    assert bind_refusal(keyed, ANY_HOST, insecure=False) is None


def test_where_a_stream_resumes() -> None:
    assert start_after(3, None) == 3
    assert start_after(3, "") == 3
    assert start_after(3, "17") == 17
    assert start_after(3, " 17 ") == 17
    for bad in ("-1", "abc", "1.5", "١٢"):
        with pytest.raises(GatewayError):
            start_after(0, bad)


def test_the_run_body_schema_is_the_job_schema_without_the_session() -> None:
    body = RunCreate.model_json_schema()
    job = PromptJob.model_json_schema()
    assert set(body["properties"]) == (set(job["properties"]) - {"session_id"}) | {"on_busy"}
    for name, schema in job["properties"].items():
        if name != "session_id":
            assert body["properties"][name] == schema, name
    assert body["required"] == ["prompt"]
    assert body["additionalProperties"] is False


def test_the_scope_names_of_requests_are_the_scopes() -> None:
    assert set(get_args(ScopeName)) == {scope.value for scope in Scope}


def test_feed_response_send_skips_the_cancel_scope_and_keeps_its_bookkeeping() -> None:
    """FeedResponse overrides sse-starlette's private _send_with_timeout: if a new
    sse-starlette stops sending through it, or renames it, this fails."""
    import inspect

    from sse_starlette import EventSourceResponse

    from gateway.sse import FeedResponse

    assert "self._send_with_timeout(" in inspect.getsource(EventSourceResponse._stream_response)
    base, ours = (
        list(inspect.signature(cls._send_with_timeout).parameters)
        for cls in (EventSourceResponse, FeedResponse)
    )
    assert base == ours == ["self", "send", "message"]

    async def failing_send(_message: object) -> None:
        raise OSError("gone")

    async def main() -> None:
        hubs = Hubs(MemorySource(), Backoff(), capacity=4)
        feed = HubFeed(hubs, stats=SseStats(capacity=4), session_id="s")
        response = FeedResponse(feed, heartbeat_s=15)
        sent: list[object] = []

        async def send(message: object) -> None:
            sent.append(message)

        await response._send_with_timeout(send, {"type": "x"})
        assert sent == [{"type": "x"}] and not response._send_interrupted
        with pytest.raises(OSError, match="gone"):
            await response._send_with_timeout(failing_send, {"type": "y"})
        assert response._send_interrupted  # so no closing body is sent after it

    asyncio.run(main())
