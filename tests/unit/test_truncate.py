"""worker/truncate.py: oversized JSON values shrink under their limit, marked, shape kept."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.blocks import TextBlock, ToolResultBlock, ToolUseBlock
from shared.events import Envelope, Event, EventType, MessageData, ResultData, StreamEventData
from tests.fakes import FakeRunStore, run_publisher
from worker.publisher import Publisher
from worker.truncate import MARKER_RE, MIN_KEPT_BYTES, encoded_size, truncate_json

# No generated string may contain a marker by chance: "…" is left out of the alphabet.
TEXT = st.text(alphabet=st.characters(blacklist_characters="…"), max_size=3000)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def skeleton(value: Any) -> Any:
    """The value with every string blanked: what truncation must never change."""
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list):
        return [skeleton(item) for item in value]
    return value


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, st.integers(min_value=0, max_value=20_000))
def test_truncation_properties(value: Any, max_bytes: int) -> None:
    result = truncate_json(value, max_bytes)
    text = json.dumps(result.value, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(text) == result.value  # valid JSON
    assert result.size == encoded_size(result.value) == len(text.encode("utf-8", "surrogatepass"))
    if encoded_size(value) <= max_bytes:
        assert result.value is value
        assert (result.fits, result.cut_strings, result.cut_bytes) == (True, 0, 0)
        return
    assert skeleton(result.value) == skeleton(value)  # keys, numbers and shape untouched
    cut = 0
    for before, after in zip(strings(value), strings(result.value), strict=True):
        marker = MARKER_RE.search(after)
        if after == before:
            assert marker is None  # marker present iff cut
            continue
        cut += 1
        assert marker is not None
        kept = after[: marker.start()]
        assert before.startswith(kept)
        assert int(marker.group(1)) == len(before[len(kept) :].encode("utf-8", "surrogatepass"))
        assert encoded_size(after) < encoded_size(before)
    assert cut == result.cut_strings
    # Fitting is promised whenever strings can be cut down to MIN_KEPT_BYTES enough;
    # result.fits must say so truthfully either way.
    assert result.fits == (result.size <= max_bytes)
    floor = truncate_json(value, 0)  # everything cut as far as allowed
    if floor.size <= max_bytes:
        assert result.fits


@given(st.integers(min_value=1, max_value=5), st.integers(min_value=10_000, max_value=400_000))
def test_big_strings_are_cut_evenly_and_ids_are_kept(count: int, size: int) -> None:
    value = {"id": "toolu_01ABCDEFGHIJKLMNOPQRSTUV", "parts": ["y" * size] * count}
    limit = 8_000
    result = truncate_json(value, limit)
    assert result.fits
    assert result.value["id"] == value["id"]
    kept = {len(p) for p in result.value["parts"]}
    assert len(kept) == 1  # the same share each
    assert limit - 200 * count < result.size <= limit  # and not cut much more than needed


def test_short_strings_are_never_cut() -> None:
    value = ["a" * MIN_KEPT_BYTES] * 1000
    result = truncate_json(value, 1000)
    assert not result.fits
    assert result.value == value
    assert result.cut_strings == 0


def test_multibyte_and_escaped_text_is_cut_on_character_boundaries() -> None:
    value = {"text": '日本語\n"é"\x01' * 50_000}
    result = truncate_json(value, 10_000)
    assert result.fits
    cut_text = result.value["text"]
    marker = MARKER_RE.search(cut_text)
    assert marker is not None
    assert value["text"].startswith(cut_text[: marker.start()])
    assert result.cut_bytes == int(marker.group(1))


# ------------------------------------------------------------------- in the publisher


def publisher(max_event_bytes: int) -> tuple[Publisher, FakeRunStore]:
    store = FakeRunStore()
    return run_publisher(store, max_event_bytes=max_event_bytes), store


def written(pub: Publisher, store: FakeRunStore) -> list[Envelope]:
    pub.flush()
    return store.envelopes("s")


def test_publisher_truncates_an_oversized_message_and_keeps_it_valid() -> None:
    pub, store = publisher(64 * 1024)
    message = MessageData(
        role="user",
        content=[
            TextBlock(text="t" * 100_000),
            ToolResultBlock(tool_use_id="toolu_1", content="r" * 300_000),
            ToolUseBlock(id="toolu_2", name="Bash", input={"command": "c" * 50_000}),
        ],
    )
    pub.add(Event(type=EventType.MESSAGE, data=message))
    (envelope,) = written(pub, store)
    assert envelope.type is EventType.MESSAGE
    data = envelope.typed_data()
    assert isinstance(data, MessageData)
    (entry,) = store.log_entries("s")
    assert len(entry) <= 64 * 1024
    blocks = [b.model_dump() for b in data.content]
    for cut in (blocks[0]["text"], blocks[1]["content"], blocks[2]["input"]["command"]):
        assert MARKER_RE.search(cut)
    assert blocks[1]["tool_use_id"] == "toolu_1"
    assert blocks[2]["id"] == "toolu_2"


def test_publisher_truncates_result_text_and_stream_deltas() -> None:
    pub, store = publisher(64 * 1024)
    pub.add(Event(type=EventType.RESULT, data=ResultData(is_error=False, result="z" * 200_000)))
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "d" * 90_000}}
    pub.add(Event(type=EventType.STREAM_EVENT, data=StreamEventData(event=delta)))
    small = ResultData(is_error=False, result="fits")
    pub.add(Event(type=EventType.RESULT, data=small))
    result, stream, untouched = written(pub, store)
    assert MARKER_RE.search(str(result.data["result"]))
    assert MARKER_RE.search(str(stream.data["event"]["delta"]["text"]))
    assert untouched.typed_data() == small


def test_publisher_drops_what_truncation_cannot_shrink() -> None:
    pub, store = publisher(64 * 1024)
    many_small = {"items": [{"k": i} for i in range(20_000)]}  # no long string to cut
    pub.add(Event(type=EventType.STREAM_EVENT, data=StreamEventData(event=many_small)))
    (envelope,) = written(pub, store)
    assert envelope.type is EventType.ERROR
    assert envelope.data["code"] == "event_too_large"
    assert "CLAUDE_QUEUE_MAX_EVENT_BYTES" in envelope.data["message"]
