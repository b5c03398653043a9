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
    """Any block we do not model (or that failed validation), kept as it came."""

    type: str


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


def _block_tag(value: Any) -> str:
    block_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if isinstance(value, UnknownBlock):
        return "unknown"
    return block_type if block_type in KNOWN_BLOCK_TYPES else "unknown"


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ServerToolUseBlock, Tag("server_tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[UnknownBlock, Tag("unknown")],
    Discriminator(_block_tag),
]

_BLOCK_ADAPTER: TypeAdapter[ContentBlock] = TypeAdapter(ContentBlock)


def parse_block(raw: Any) -> ContentBlock:
    """Validate one raw block; anything malformed is kept verbatim as UnknownBlock."""
    try:
        return _BLOCK_ADAPTER.validate_python(raw)
    except ValidationError:
        if isinstance(raw, dict):
            fields = {k: v for k, v in raw.items() if k != "type"}
            return UnknownBlock(type=str(raw.get("type", "unknown")), **fields)
        return UnknownBlock(type="unknown", value=raw)
