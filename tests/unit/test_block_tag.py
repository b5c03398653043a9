"""shared.blocks: the content-block discriminator gives each value the tag that the
allow-list reading of it gives, and blocks round-trip through a message unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.blocks import (
    KNOWN_BLOCK_TYPES,
    MalformedBlock,
    TextBlock,
    UnknownBlock,
    _block_tag,
    parse_block,
)
from shared.events import MessageData


def _reference(value: Any) -> str:
    """The tag read the plain way: fixed for unknown and malformed blocks, else the
    value's `type` if it is a known block type."""
    if isinstance(value, UnknownBlock | MalformedBlock):
        return "unknown" if isinstance(value, UnknownBlock) else "malformed"
    block_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if block_type == "malformed":
        return "malformed"
    known = isinstance(block_type, str) and block_type in KNOWN_BLOCK_TYPES
    return str(block_type) if known else "unknown"


types = st.sampled_from(sorted(KNOWN_BLOCK_TYPES | {"malformed", "other"})) | st.text(max_size=8)
raw_blocks = st.fixed_dictionaries(
    {"type": types | st.integers() | st.none()},
    optional={"text": st.text(max_size=20), "id": st.text(max_size=5)},
)


@given(raw_blocks)
def test_raw_blocks_and_their_models_get_the_plain_tag(raw: dict[str, Any]) -> None:
    assert _block_tag(raw) == _reference(raw)
    block = parse_block(raw)
    assert _block_tag(block) == _reference(block)


@given(st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
def test_values_that_are_no_block_are_unknown(value: Any) -> None:
    assert _block_tag(value) == _reference(value) == "unknown"


@given(st.lists(raw_blocks, max_size=4))
def test_blocks_survive_a_message_round_trip(raws: list[dict[str, Any]]) -> None:
    message = MessageData(role="assistant", content=[parse_block(raw) for raw in raws])
    again = MessageData.validate_read(message.model_dump(mode="json"))
    assert again == message
    assert [type(b) for b in again.content] == [type(b) for b in message.content]


def test_a_text_block_is_text() -> None:
    assert _block_tag(TextBlock(text="hi")) == "text"
