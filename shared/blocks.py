"""Content blocks of CLI messages, as a discriminated union on `type`.

Blocks of a type we do not know are kept verbatim as `UnknownBlock`, never dropped,
so a newer CLI never loses content on the way to clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
)


class _Block(BaseModel):
    # extra="allow": the CLI adds fields (citations, caller, ...) we pass through untouched.
    model_config = ConfigDict(extra="allow", frozen=True)


class TextBlock(_Block):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(_Block):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class ToolUseBlock(_Block):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ServerToolUseBlock(_Block):
    type: Literal["server_tool_use"] = "server_tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str | list[Any] | None = None
    is_error: bool | None = None


class ImageBlock(_Block):
    type: Literal["image"] = "image"
    source: dict[str, Any]


class UnknownBlock(_Block):
    """A block of a type we do not model, kept as it came."""

    type: str


class MalformedBlock(_Block):
    """A block of a known type that did not match its shape; the original is in `block`.

    Kept under its own type so that clients validating the envelope still can.
    """

    type: Literal["malformed"] = "malformed"
    block: Any


# Every block model: fields and extras only, no alias or custom serializer (so their
# JSON is their fields then their extras, which shared/encode.py relies on).
BLOCK_MODELS: tuple[type[BaseModel], ...] = (
    TextBlock,
    ThinkingBlock,
    RedactedThinkingBlock,
    ToolUseBlock,
    ServerToolUseBlock,
    ToolResultBlock,
    ImageBlock,
    UnknownBlock,
    MalformedBlock,
)


KNOWN_BLOCK_TYPES = frozenset(
    {
        "text",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "server_tool_use",
        "tool_result",
        "image",
    }
)


# The block models whose tag is their `type` (neither unknown nor malformed, which
# have fixed tags). Matched by exact class first: pydantic's isinstance runs Python
# code, and pydantic calls this once to validate a block and again to serialize it.
_TYPED_BLOCKS = frozenset(BLOCK_MODELS) - {UnknownBlock, MalformedBlock}


def _block_tag(value: Any) -> str:
    kind = type(value)
    if kind is dict:  # a raw block (parse_block): the common case
        block_type = value.get("type")
    elif kind in _TYPED_BLOCKS:  # a block model being serialized or validated again
        block_type = value.type
    elif isinstance(value, UnknownBlock | MalformedBlock):
        return "unknown" if isinstance(value, UnknownBlock) else "malformed"
    else:
        block_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if block_type == "malformed":
        return "malformed"
    known = isinstance(block_type, str) and block_type in KNOWN_BLOCK_TYPES
    return str(block_type) if known else "unknown"


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ServerToolUseBlock, Tag("server_tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[MalformedBlock, Tag("malformed")]
    | Annotated[UnknownBlock, Tag("unknown")],
    Discriminator(_block_tag),
]

_BLOCK_ADAPTER: TypeAdapter[ContentBlock] = TypeAdapter(ContentBlock)


def parse_block(raw: Any) -> ContentBlock:
    """Validate one raw block; unknown types are kept verbatim, malformed ones wrapped."""
    try:
        return _BLOCK_ADAPTER.validate_python(raw)
    except ValidationError:
        return MalformedBlock(block=raw)
