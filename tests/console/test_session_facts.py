"""What the console reads beyond the gateway's first API: each session's last run
(status, duration, cost, turns, tokens) and a queued run's place in the queue."""

from __future__ import annotations

from typing import Any

import httpx

from producer.sessions import SessionInfo, SessionState, queue_position, summarize_last_run
from shared.events import Envelope
from tests.conftest import WorkerFactory
from tests.gateway.sse import read_frames, until_finished

RUN = "0" * 32


def _envelope(seq: int, kind: str, data: dict[str, Any], run_id: str = RUN) -> Envelope:
    return Envelope(seq=seq, session_id="s", run_id=run_id, ts=100.0 + seq, type=kind, data=data)


def test_an_idle_session_summarizes_its_last_finished_run_and_its_result() -> None:
    info = SessionInfo(session_id="s", state=SessionState.IDLE, last_seq=4)
    tail = [
        _envelope(1, "queued", {}),
        _envelope(
            2,
            "result",
            {
                "is_error": False,
                "total_cost_usd": 0.25,
                "num_turns": 3,
                "usage": {"input_tokens": 7, "output_tokens": 9},
            },
        ),
        _envelope(3, "finished", {"status": "failed", "duration_s": 1.5}),
    ]
    summary = summarize_last_run(info, tail)
    assert summary is not None
    assert summary.as_dict() == {
        "run_id": RUN,
        "status": "failed",
        "finished_at": 103.0,
        "duration_s": 1.5,
        "cost_usd": 0.25,
        "num_turns": 3,
        "input_tokens": 7,
        "output_tokens": 9,
    }


def test_a_pending_run_is_the_last_run_and_untyped_numbers_are_left_out() -> None:
    pending = SessionInfo(session_id="s", state=SessionState.RUNNING, pending_runs=["r2"])
    summary = summarize_last_run(pending, [_envelope(1, "finished", {"status": "succeeded"})])
    assert summary is not None and (summary.run_id, summary.status) == ("r2", "running")

    idle = SessionInfo(session_id="s", state=SessionState.IDLE)
    assert summarize_last_run(idle, [_envelope(1, "queued", {})]) is None
    odd = summarize_last_run(
        idle,
        [
            _envelope(1, "result", {"total_cost_usd": "1", "num_turns": True, "usage": []}),
            _envelope(2, "finished", {"status": "succeeded", "duration_s": "2"}),
        ],
    )
    assert odd is not None and odd.status == "succeeded"
    assert (odd.duration_s, odd.cost_usd, odd.num_turns, odd.input_tokens) == (None,) * 4


def test_queue_position_counts_the_jobs_ahead() -> None:
    assert queue_position([b"a", b"b", "c"], "c") == 2
    assert queue_position([b"a"], "a") == 0
    assert queue_position([], "a") is None


def test_the_list_shows_the_last_runs_status_duration_and_cost(
    api: httpx.Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    accepted = api.post("/v1/sessions/facts-1/runs", json={"prompt": "FAKE: tool"}).json()
    frames = read_frames(api, "facts-1", params=until_finished(accepted["run_id"]))
    result = next(f.envelope["data"] for f in frames if f.event == "result")
    finished = frames[-1].envelope

    listed = api.get("/v1/sessions").json()["sessions"]
    assert [s["session_id"] for s in listed] == ["facts-1"]
    last_run = listed[0]["last_run"]
    assert last_run == {
        "run_id": accepted["run_id"],
        "status": "succeeded",
        "finished_at": finished["ts"],
        "duration_s": finished["data"]["duration_s"],
        "cost_usd": result["total_cost_usd"],
        "num_turns": 2,
        "input_tokens": result["usage"]["input_tokens"],
        "output_tokens": result["usage"]["output_tokens"],
    }
    detail = api.get("/v1/sessions/facts-1").json()
    assert detail["last_run"] == last_run
    assert detail["queue_position"] is None


def test_a_queued_run_shows_its_place_in_the_queue(api: httpx.Client) -> None:
    # No worker: both runs wait in the shared queue, in submit order.
    first = api.post("/v1/sessions/facts-a/runs", json={"prompt": "one"}).json()
    api.post("/v1/sessions/facts-b/runs", json={"prompt": "two"}).raise_for_status()

    a = api.get("/v1/sessions/facts-a").json()
    b = api.get("/v1/sessions/facts-b").json()
    assert (a["state"], a["queue_position"]) == ("queued", 0)
    assert (b["state"], b["queue_position"]) == ("queued", 1)
    assert a["last_run"] == {
        "run_id": first["run_id"],
        "status": "queued",
        "finished_at": None,
        "duration_s": None,
        "cost_usd": None,
        "num_turns": None,
        "input_tokens": None,
        "output_tokens": None,
    }
