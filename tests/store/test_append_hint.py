"""Appends with a seq hint (shared/runstore/scripts.py, PUBLISH_LUA): bodies that carry the
seq they were expected to get are logged and published as sent when the guess holds,
and with the real seq put in front of them when another writer came first."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from shared.encode import encode_body, seq_prefix
from shared.events import Event, EventType, RunStatus, TextData
from shared.runstore import Appended, Claimed, RunStore
from tests.store.conftest import new_run


def _body(session_id: str, run_id: str, text: str) -> bytes:
    event = Event(type=EventType.TEXT, data=TextData(text=text))
    return encode_body(session_id, run_id, time.time(), event).encode()


def _running(store: RunStore, session_id: str) -> tuple[str, str]:
    run = new_run(session_id)
    store.submit(run)  # seq 1: its `queued`
    claim = store.claim(session_id, run.run_id, worker="w", host="h")
    assert isinstance(claim, Claimed)
    return run.run_id, claim.token


def _logged(redis_client: redis.Redis, store: RunStore, session_id: str) -> list[bytes]:
    entries = redis_client.xrange(store.keys.log(session_id)) or []
    logged = [fields[b"e"] for _id, fields in entries if fields is not None]
    assert all(isinstance(entry, bytes) for entry in logged)
    return cast(list[bytes], logged)


def _hinted(bodies: list[bytes], hint: int) -> list[bytes]:
    return [seq_prefix(hint + i) + body for i, body in enumerate(bodies)]


def test_bodies_with_the_right_seqs_are_logged_and_published_as_sent(
    store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, token = _running(store, "hint")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.keys.channel("hint"))
    try:
        sent = _hinted([_body("hint", run_id, t) for t in "abc"], hint=2)
        written = store.append("hint", run_id, token=token, first_index=1, bodies=sent, seq_hint=2)
        assert written == Appended(True, last_seq=4)
        assert _logged(redis_client, store, "hint")[1:] == sent
        published: list[bytes] = []
        while len(published) < 3:
            message = pubsub.get_message(timeout=5)
            if message is not None:
                published.append(message["data"])
        assert published == sent
    finally:
        pubsub.close()
    assert [e.seq for e in store.replay("hint")] == [1, 2, 3, 4]


def test_a_wrong_guess_gets_the_real_seqs_across_a_digit_boundary(
    store: RunStore, redis_client: redis.Redis
) -> None:
    run_id, token = _running(store, "guess")
    # Another writer: the session's next run is submitted meanwhile (its `queued`, seq 2).
    store.submit(new_run("guess"))
    headless = [_body("guess", run_id, str(i)) for i in range(12)]
    # The writer expected seqs 2..13 (prefixes of 1 and 2 digits); they are 3..14.
    written = store.append(
        "guess", run_id, token=token, first_index=1, bodies=_hinted(headless, 2), seq_hint=2
    )
    assert written == Appended(True, last_seq=14)
    logged = _logged(redis_client, store, "guess")[2:]
    assert logged == [seq_prefix(3 + i) + body for i, body in enumerate(headless)]
    replayed = list(store.replay("guess"))
    assert [e.seq for e in replayed] == list(range(1, 15))
    assert [e.data.get("text") for e in replayed[2:]] == [str(i) for i in range(12)]


def test_a_retried_hinted_write_is_logged_once(store: RunStore, redis_client: redis.Redis) -> None:
    run_id, token = _running(store, "again")
    sent = _hinted([_body("again", run_id, t) for t in "ab"], hint=2)
    kwargs: dict[str, Any] = {"token": token, "first_index": 1, "bodies": sent, "seq_hint": 2}
    assert store.append("again", run_id, **kwargs) == Appended(True, last_seq=3)
    # Its reply was lost: the same call again writes nothing, with or without a final status.
    assert store.append("again", run_id, **kwargs) == Appended(True, last_seq=0)
    closing = store.append("again", run_id, **kwargs | {"final_status": RunStatus.SUCCEEDED})
    assert closing == Appended(True, last_seq=0)
    assert store.append("again", run_id, **kwargs) == Appended(True, last_seq=0)
    assert [json.loads(e)["seq"] for e in _logged(redis_client, store, "again")] == [1, 2, 3]
