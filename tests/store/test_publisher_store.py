"""The publisher over a real RunStore: a write retried after a lost reply is logged once."""

from __future__ import annotations

from typing import Any

import redis

from producer.submission import prepare
from shared.events import Event, EventType, FinishedData, RunStatus, TextData
from shared.jobs import PromptJob
from shared.runstore import Appended, Claimed, RunStore
from shared.settings import Settings
from worker.publisher import Publisher

SESSION = "dedupe"


class RepliesLost(RunStore):
    """The next `lose` appends are written, then their replies never arrive."""

    def __init__(self, client: redis.Redis, settings: Settings, lose: int) -> None:
        super().__init__(client, settings)
        self.lose = lose

    def append(self, session_id: str, run_id: str, **kwargs: Any) -> Appended:
        written = super().append(session_id, run_id, **kwargs)
        if self.lose:
            self.lose -= 1
            raise redis.ConnectionError("the connection dropped before the reply")
        return written


def _running_publisher(store: RunStore, settings: Settings) -> tuple[Publisher, str]:
    """The publisher of a run of SESSION, submitted and claimed on `store`, and its run id."""
    run = prepare(settings, PromptJob(session_id=SESSION, prompt="p"))
    store.submit(run)
    claimed = store.claim(SESSION, run.run_id, worker="w", host="h")
    assert isinstance(claimed, Claimed)
    publisher = Publisher(
        store,
        session_id=SESSION,
        run_id=run.run_id,
        token=claimed.token,
        max_event_bytes=settings.max_event_bytes,
    )
    return publisher, run.run_id


def test_retried_writes_are_logged_once(settings: Settings, redis_client: redis.Redis) -> None:
    store = RepliesLost(redis_client, settings, lose=2)
    publisher, run_id = _running_publisher(store, settings)
    publisher.publish(*(Event(type=EventType.TEXT, data=TextData(text=t)) for t in "ab"))
    finished = FinishedData(status=RunStatus.SUCCEEDED, duration_s=1.0)
    publisher.publish(
        Event(type=EventType.FINISHED, data=finished), final_status=RunStatus.SUCCEEDED
    )
    assert store.lose == 0  # both writes lost their first reply
    logged = list(store.replay(SESSION))
    assert [e.type for e in logged] == [
        EventType.QUEUED,
        EventType.TEXT,
        EventType.TEXT,
        EventType.FINISHED,
    ]
    assert [e.seq for e in logged] == [1, 2, 3, 4]
    assert store.run_record(SESSION, run_id).final_status == "succeeded"


class HintsSeen(RunStore):
    """Records the seq hint of every append."""

    hints: list[int]

    def append(self, session_id: str, run_id: str, **kwargs: Any) -> Appended:
        self.hints.append(kwargs.get("seq_hint", 0))
        return super().append(session_id, run_id, **kwargs)


def test_the_publisher_guesses_its_next_seq_and_survives_a_wrong_guess(
    settings: Settings, redis_client: redis.Redis
) -> None:
    store = HintsSeen(redis_client, settings)
    store.hints = []
    publisher, _run_id = _running_publisher(store, settings)  # its run's `queued`: seq 1
    text = [Event(type=EventType.TEXT, data=TextData(text=t)) for t in "abc"]
    publisher.publish(text[0])  # seq 2: no guess before the first reply
    publisher.publish(text[1])  # seq 3, guessed
    store.submit(prepare(settings, PromptJob(session_id=SESSION, prompt="next")))  # seq 4
    publisher.publish(text[2])  # guessed 4, gets 5
    assert store.hints == [0, 3, 4]
    logged = list(store.replay(SESSION))
    assert [e.seq for e in logged] == [1, 2, 3, 4, 5]
    assert [e.type for e in logged] == [
        EventType.QUEUED,
        *[EventType.TEXT] * 2,
        EventType.QUEUED,
        EventType.TEXT,
    ]
    assert [e.data.get("text") for e in logged if e.type is EventType.TEXT] == ["a", "b", "c"]
    assert publisher.last_seq == 5
