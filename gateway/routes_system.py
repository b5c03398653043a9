"""Queue status, and the probes: /healthz (the process) and /readyz (Redis answers)."""

import asyncio
from typing import Annotated

import redis
from fastapi import APIRouter, Depends

from gateway.auth import Principal
from gateway.errors import REDIS_UNAVAILABLE, GatewayError
from gateway.models import GatewayStats, Health, StatusOut, WorkerOut
from gateway.state import Gateway, error_responses

READY_TIMEOUT_S = 2.0


def system_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    client = gateway.client

    @router.get(
        "/v1/status",
        tags=["status"],
        summary="Queue depth, workers, running runs, and this gateway's streams",
        responses=error_responses(401, 403, 503),
    )
    async def status(
        principal: Annotated[Principal, Depends(gateway.auth.require_api_key)],
    ) -> StatusOut:
        """API key only. `gateway` counts this process's event streams."""
        del principal
        queue = await client.status()
        stats = gateway.stats
        return StatusOut(
            queue=queue.queue,
            queued=queue.queued,
            workers=[WorkerOut.model_validate(w.as_dict()) for w in queue.workers],
            running=queue.running,
            gateway=GatewayStats(
                sse_streams_open=stats.open,
                sse_clients_dropped=stats.dropped,
                sse_buffer_capacity=stats.capacity,
                sse_buffer_high_water=stats.high_water,
            ),
        )

    @router.get("/healthz", tags=["probes"], summary="The process answers")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        tags=["probes"],
        summary="Redis answers (503 otherwise)",
        responses=error_responses(503),
    )
    async def readyz() -> Health:
        try:
            await asyncio.wait_for(client.redis.ping(), READY_TIMEOUT_S)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            raise GatewayError(
                503,
                REDIS_UNAVAILABLE,
                f"Redis at {gateway.settings.redis_url_redacted} did not answer: "
                f"{type(exc).__name__}",
            ) from None
        return Health(status="ready")

    return router
