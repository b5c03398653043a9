"""A client that stops reading is dropped once its buffer is full; it resumes later."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource

from producer.client import Client
from tests.conftest import WorkerFactory
from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY
from tests.gateway.sse import (
    Frame,
    assert_frames_consistent,
    events_url,
    read_resuming,
    until_finished,
)

BUFFER = 50
# About 11 MiB of frames: more than the kernel's socket buffers on loopback hold (the
# server's send buffer grows to a few MiB), so the server's writes do block.
FLOOD = "FAKE: many n=5000 rate=0 size=2000"


def test_a_client_that_stops_reading_is_dropped_with_a_bounded_buffer(
    start_gateway: GatewayFactory, client: Client, start_worker: WorkerFactory
) -> None:
    server = start_gateway(sse_client_buffer=BUFFER)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    api = httpx.Client(base_url=server.url, headers=headers, timeout=120)
    slow = httpx.Client(base_url=server.url, headers=headers, timeout=120)
    with api, slow:
        start_worker()
        run = api.post("/v1/sessions/gw-flood/runs", json={"prompt": FLOOD}).json()
        query = until_finished(run["run_id"])
        received: list[Frame] = []
        with slow.stream("GET", events_url("gw-flood"), params=query) as response:
            assert response.status_code == 200
            # Read nothing until the server has given up on this client.
            server.wait_for("sse_client_dropped", timeout_s=120)
            with pytest.raises(httpx.RemoteProtocolError):  # closed mid-stream
                for sse in EventSource(response).iter_sse():
                    received.append(Frame.of(sse))

        stats = api.get("/v1/status").json()["gateway"]
        assert stats["sse_clients_dropped"] == 1
        assert stats["sse_streams_open"] == 0
        assert stats["sse_buffer_capacity"] == BUFFER
        assert 0 < stats["sse_buffer_high_water"] <= BUFFER

        assert received, "the client got the frames written before it stalled"
        assert all(f.event != "finished" for f in received)
        # A reader slower than the flood may be dropped again: it resumes each time.
        rest = read_resuming(api, "gw-flood", params=query, last_id=received[-1].id)

    both = received + rest
    assert_frames_consistent(both, "gw-flood")
    assert both[-1].event == "finished"
    assert [f.seq for f in both] == [e.seq for e in client.history("gw-flood")]
