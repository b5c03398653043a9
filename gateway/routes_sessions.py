"""Sessions: list, read, delete; mint session tokens."""

import time
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query
from rq import Queue

from gateway.auth import Principal
from gateway.errors import NOT_FOUND, TOKENS_DISABLED, GatewayError, invalid
from gateway.models import (
    OpenRequestOut,
    SessionDeleted,
    SessionDetail,
    SessionList,
    SessionOut,
    TokenCreate,
    TokenOut,
)
from gateway.routes_runs import SessionId
from gateway.state import Gateway, error_responses
from gateway.tokens import Scope, mint
from producer.aio import AsyncClient
from producer.errors import redis_errors
from producer.sessions import (
    SUMMARY_TAIL_EVENTS,
    SessionInfo,
    SessionState,
    queue_position,
    summarize_last_run,
)

DEFAULT_TOKEN_TTL_S = 3600.0
QUEUE_POSITION_SCAN = 1000  # jobs read from the queue's head to find a queued run


async def session_facts(client: AsyncClient, info: SessionInfo) -> dict[str, Any]:
    """The session as the API shows it: its record plus its last run's summary."""
    tail = []
    if info.last_seq > 0:
        async with redis_errors(client.settings.redis_url_redacted):
            tail = await client.store.replay_page(
                info.session_id,
                max(0, info.last_seq - SUMMARY_TAIL_EVENTS),
                upto=info.last_seq,
                count=SUMMARY_TAIL_EVENTS,
            )
    summary = summarize_last_run(info, tail)
    return {**info.as_dict(), "last_run": None if summary is None else summary.as_dict()}


async def queued_position(client: AsyncClient, info: SessionInfo) -> int | None:
    """Jobs ahead of the session's queued head run in the shared queue, if it is there."""
    if info.state is not SessionState.QUEUED or not info.pending_runs:
        return None
    key = Queue.redis_queue_namespace_prefix + client.settings.queue_name
    async with redis_errors(client.settings.redis_url_redacted):
        job_ids = await client.redis.lrange(key, 0, QUEUE_POSITION_SCAN - 1)
    return queue_position(cast(list[object], job_ids), info.pending_runs[0])


def sessions_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
    client = gateway.client
    auth = gateway.auth
    ApiKey = Annotated[Principal, Depends(auth.require_api_key)]

    @router.get("", summary="List sessions", responses=error_responses(401, 403, 422, 503))
    async def list_sessions(
        principal: ApiKey,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
    ) -> SessionList:
        """Sessions with recent activity, most recent first (API key only)."""
        del principal
        infos = await client.sessions(limit=limit)
        return SessionList(
            sessions=[SessionOut.model_validate(await session_facts(client, i)) for i in infos]
        )

    @router.get(
        "/{session_id}",
        summary="Read a session, its runs and open permission requests",
        responses=error_responses(401, 403, 404, 422, 503),
    )
    async def read_session(
        principal: Annotated[Principal, Depends(auth.require_scope(Scope.READ))],
        session_id: SessionId,
    ) -> SessionDetail:
        del principal
        info = await client.session(session_id)
        if info is None:
            raise GatewayError(404, NOT_FOUND, f"no session {session_id}")
        requests = [
            OpenRequestOut.model_validate(r.as_dict())
            for r in await client.open_requests(session_id)
        ]
        return SessionDetail.model_validate(
            {
                **await session_facts(client, info),
                "open_requests": requests,
                "queue_position": await queued_position(client, info),
            }
        )

    @router.delete(
        "/{session_id}",
        summary="Delete a session (its log, runs and transcript)",
        responses=error_responses(401, 403, 404, 409, 422, 503),
    )
    async def delete_session(
        principal: ApiKey,
        session_id: SessionId,
        force: Annotated[
            bool, Query(description="Cancel its queued and running runs first.")
        ] = False,
    ) -> SessionDeleted:
        """409 while runs are pending, unless `force` (API key only)."""
        del principal
        removed = await client.delete_session(session_id, force=force)
        if removed == 0:
            raise GatewayError(404, NOT_FOUND, f"no session {session_id}")
        return SessionDeleted(session_id=session_id, keys_removed=removed)

    @router.post(
        "/{session_id}/tokens",
        status_code=201,
        summary="Mint a token for this session",
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def mint_token(principal: ApiKey, session_id: SessionId, body: TokenCreate) -> TokenOut:
        """A signed token that may do `scopes` on this session only, for `ttl_s` seconds
        (API key only). 503 `tokens_disabled` when CLAUDE_QUEUE_TOKEN_SECRET is unset."""
        del principal
        secret = auth.token_secret
        if secret is None:
            raise GatewayError(
                503,
                TOKENS_DISABLED,
                "session tokens are disabled: set CLAUDE_QUEUE_TOKEN_SECRET on the gateway",
            )
        limit = gateway.settings.token_max_ttl_s
        ttl_s = body.ttl_s if body.ttl_s is not None else min(DEFAULT_TOKEN_TTL_S, limit)
        if ttl_s > limit:
            raise invalid(
                "invalid token request",
                {"ttl_s": f"at most {limit:g} seconds (CLAUDE_QUEUE_TOKEN_MAX_TTL_S)"},
            )
        token, claims = mint(
            secret, session_id, frozenset(map(Scope, body.scopes)), now=time.time(), ttl_s=ttl_s
        )
        return TokenOut(
            token=token,
            token_id=claims.token_id,
            session_id=session_id,
            scopes=sorted(claims.scopes),
            expires_at=claims.expires_at,
        )

    return router
