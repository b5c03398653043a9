"""Reading the gateway's event streams in tests (httpx + httpx-sse)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, connect_sse


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame: its id, event and the envelope in its data."""

    id: int
    event: str
    envelope: dict[str, Any]

    @classmethod
    def of(cls, sse: ServerSentEvent) -> Frame:
        return cls(id=int(sse.id), event=sse.event, envelope=json.loads(sse.data))

    @property
    def seq(self) -> int:
        return int(self.envelope["seq"])

    @property
    def run_id(self) -> str:
        return str(self.envelope["run_id"])


def events_url(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/events"


def frames_of(source: EventSource) -> Iterator[Frame]:
    source.response.raise_for_status()
    for sse in source.iter_sse():
        yield Frame.of(sse)


def read_frames(
    client: httpx.Client,
    session_id: str,
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[Frame]:
    """Every frame of a stream that ends by itself (e.g. ?until=finished)."""
    with connect_sse(
        client, "GET", events_url(session_id), params=params, headers=dict(headers or {})
    ) as source:
        return list(frames_of(source))


def until_finished(run_id: str, after: int = 0) -> dict[str, str | int]:
    """Query of a stream that follows one run to its finished event."""
    return {"after": after, "until": "finished", "run_id": run_id}


def assert_frames_consistent(frames: list[Frame], session_id: str) -> None:
    """Each frame's id and event say the same as its envelope; seqs only grow."""
    for frame in frames:
        assert frame.id == frame.seq
        assert frame.event == frame.envelope["type"]
        assert frame.envelope["session_id"] == session_id
    seqs = [frame.seq for frame in frames]
    assert seqs == sorted(set(seqs))


def read_resuming(
    client: httpx.Client,
    session_id: str,
    *,
    params: Mapping[str, str | int],
    last_id: int,
    attempts: int = 50,
) -> list[Frame]:
    """Frames up to a `finished`, reconnecting with Last-Event-ID as an EventSource does
    when the server closes a stream mid-way (a reader slower than a flood is dropped)."""
    frames: list[Frame] = []
    for _ in range(attempts):
        headers = {"Last-Event-ID": str(frames[-1].id if frames else last_id)}
        try:
            with connect_sse(
                client, "GET", events_url(session_id), params=params, headers=headers
            ) as source:
                frames.extend(frames_of(source))
        except httpx.RemoteProtocolError:
            continue
        if frames and frames[-1].event == "finished":
            return frames
    raise AssertionError(f"no finished event after {attempts} connections")
