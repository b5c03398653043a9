"""GET /metrics: this gateway process's streams and the queue, for Prometheus.

Everything is read at scrape time: the stream counters the process already keeps
(gateway.state.Gateway.stats), the permission requests open on running runs, and the
queue's families (shared/metrics.py) from Redis. No metric object lives between
scrapes, so several apps in one process never share (or clash on) a registry. With
`serve --workers N` each process answers for its own streams.
"""

# No `from __future__ import annotations`: FastAPI reads the route's Annotated
# dependency (which names a local) at definition time.
import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import redis
from fastapi import APIRouter, Depends, Response

from gateway.auth import Principal
from gateway.state import Gateway, error_responses
from shared.metrics import PREFIX, queue_families

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from producer.aio import AsyncClient
    from producer.status import QueueStatus

# Running runs looked at for open permission requests, at most, per scrape.
MAX_RUNS_SCANNED = 1000
_CONCURRENT_READS = 32
SCRAPE_TIMEOUT_S = 5.0


def metrics_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["probes"],
        summary="Prometheus metrics: this process's streams, open permission requests, the queue",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
            **error_responses(401, 403),
        },
    )
    async def metrics(
        principal: Annotated[Principal, Depends(gateway.auth.require_api_key)],
    ) -> Response:
        """API key only (Prometheus: `authorization: {credentials: <key>}`)."""
        del principal
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import CollectorRegistry

        families = [*stream_families(gateway), *await redis_families(gateway)]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(families))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def stream_families(gateway: Gateway) -> list["Metric"]:
    """This process's SSE streams."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    stats = gateway.stats
    return [
        GaugeMetricFamily(
            PREFIX + "gateway_sse_streams_open", "Event streams open now.", value=stats.open
        ),
        CounterMetricFamily(
            PREFIX + "gateway_sse_clients_dropped",
            "Streams ended because their client read too slowly.",
            value=stats.dropped,
        ),
        GaugeMetricFamily(
            PREFIX + "gateway_sse_buffer_high_water",
            "Most events one client's buffer has held (of sse_client_buffer).",
            value=stats.high_water,
        ),
    ]


async def redis_families(gateway: Gateway) -> list["Metric"]:
    """The queue, and the permission requests open on running runs; redis_up 0 if away."""
    from prometheus_client.core import GaugeMetricFamily

    client = gateway.client
    queue = gateway.settings.queue_name
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):
            status = await client.status()
            open_requests = await _open_requests(client, status)
    except (TimeoutError, redis.RedisError, OSError):
        return queue_families(queue=queue, redis_up=False)
    by_state: dict[str, int] = {}
    for worker in status.workers:
        by_state[str(worker.state)] = by_state.get(str(worker.state), 0) + 1
    requests = GaugeMetricFamily(
        PREFIX + "permission_requests_open",
        "Permission requests of running runs waiting for an answer.",
        value=open_requests,
    )
    families = queue_families(
        queue=queue,
        redis_up=True,
        queued=status.queued,
        workers_by_state=by_state,
        running=len(status.running),
    )
    return [*families, requests]


async def _open_requests(client: "AsyncClient", status: "QueueStatus") -> int:
    sessions = sorted(set(status.running.values()))[:MAX_RUNS_SCANNED]
    gate = asyncio.Semaphore(_CONCURRENT_READS)

    async def count(session_id: str) -> int:
        async with gate:
            try:
                return len(await client.open_requests(session_id))
            except ValueError:  # a malformed id in the running hash: not ours to count
                return 0

    return sum(await asyncio.gather(*(count(s) for s in sessions)))


class _Fixed:
    """A collector of families already read."""

    def __init__(self, families: Iterable["Metric"]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable["Metric"]:
        return self._families
