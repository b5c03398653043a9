"""Submit over HTTP, then follow the session's events as Server-Sent Events."""

from __future__ import annotations

import httpx
from httpx_sse import connect_sse

from producer.client import Client
from tests.conftest import WorkerFactory
from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY
from tests.gateway.sse import (
    Frame,
    assert_frames_consistent,
    events_url,
    frames_of,
    read_frames,
    until_finished,
)


def _submit(api: httpx.Client, session_id: str, prompt: str, **fields: object) -> dict[str, str]:
    response = api.post(f"/v1/sessions/{session_id}/runs", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    accepted: dict[str, str] = response.json()
    assert set(accepted) == {"session_id", "run_id", "seq"}
    return accepted


def test_submit_then_stream_to_finished(api: httpx.Client, start_worker: WorkerFactory) -> None:
    start_worker()
    run = _submit(api, "gw-basic", "FAKE: slow n=3 delay_ms=10")
    frames = read_frames(api, "gw-basic", params=until_finished(run["run_id"]))

    assert_frames_consistent(frames, "gw-basic")
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0].event == "queued"
    assert frames[0].seq == int(run["seq"])
    assert frames[-1].event == "finished"
    assert frames[-1].envelope["data"]["status"] == "succeeded"
    assert {f.run_id for f in frames} == {run["run_id"]}
    assert sum(f.event == "message" for f in frames) >= 3


def test_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(
    api: httpx.Client, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    run = _submit(api, "gw-resume", "FAKE: slow n=20 delay_ms=50")
    query = until_finished(run["run_id"])
    first: list[Frame] = []
    with connect_sse(api, "GET", events_url("gw-resume"), params=query) as source:
        for frame in frames_of(source):
            first.append(frame)
            if sum(f.event == "message" for f in first) == 5:
                break  # leave mid-run: the connection is closed here
    assert first[-1].event == "message"
    assert all(f.event != "finished" for f in first)

    rest = read_frames(api, "gw-resume", params=query, headers={"Last-Event-ID": str(first[-1].id)})

    both = first + rest
    assert_frames_consistent(both, "gw-resume")
    assert rest[0].seq == first[-1].seq + 1
    assert rest[-1].event == "finished"
    assert [f.seq for f in both] == [e.seq for e in client.history("gw-resume")]


def test_last_event_id_wins_over_after(api: httpx.Client, start_worker: WorkerFactory) -> None:
    start_worker()
    run = _submit(api, "gw-after", "hello")
    whole = read_frames(api, "gw-after", params=until_finished(run["run_id"]))
    assert len(whole) >= 5

    after_two = read_frames(api, "gw-after", params=until_finished(run["run_id"], after=2))
    assert [f.seq for f in after_two] == [f.seq for f in whole[2:]]
    resumed = read_frames(
        api,
        "gw-after",
        params=until_finished(run["run_id"], after=1),
        headers={"Last-Event-ID": "4"},
    )
    assert [f.seq for f in resumed] == [f.seq for f in whole[4:]]


def test_until_finished_stops_at_the_next_finished_of_any_run(
    api: httpx.Client, start_worker: WorkerFactory
) -> None:
    first = _submit(api, "gw-until", "one")
    second = _submit(api, "gw-until", "two")
    start_worker()

    frames = read_frames(api, "gw-until", params={"until": "finished"})

    assert frames[-1].event == "finished"
    assert frames[-1].run_id == first["run_id"]
    assert sum(f.event == "finished" for f in frames) == 1
    assert second["run_id"] in {f.run_id for f in frames}  # its queued event came before


def test_run_id_limits_the_stream_to_one_run(
    api: httpx.Client, start_worker: WorkerFactory
) -> None:
    first = _submit(api, "gw-onerun", "one")
    second = _submit(api, "gw-onerun", "two")
    start_worker()

    frames = read_frames(api, "gw-onerun", params=until_finished(second["run_id"]))

    assert {f.run_id for f in frames} == {second["run_id"]}
    assert frames[0].event == "queued"
    assert frames[-1].event == "finished"
    assert_frames_consistent(frames, "gw-onerun")
    assert first["run_id"] != second["run_id"]


def test_an_idle_stream_gets_comment_heartbeats(start_gateway: GatewayFactory) -> None:
    server = start_gateway(sse_heartbeat_s=0.2)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(base_url=server.url, headers=headers, timeout=30) as http,
        http.stream("GET", events_url("gw-idle")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        comment = next(line for line in response.iter_lines() if line.startswith(":"))
    assert comment == ": heartbeat"
