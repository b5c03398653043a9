"""What the fake Anthropic API answers (devtools/fake_anthropic.py): a scripted turn as
a Messages API message or its SSE stream, error bodies, and the CLI's side calls."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devtools.fake_script import (
    JSON,
    ErrorTurn,
    TextTurn,
    ThinkingTurn,
    ToolUseTurn,
)

# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """Content blocks of one assistant message plus how to pace its streaming."""

    blocks: list[JSON]
    stop_reason: str
    chunks: int = 1
    delay: float = 0.0


def reply_for(turn: TextTurn | ThinkingTurn | ToolUseTurn) -> Reply:
    if isinstance(turn, TextTurn):
        return Reply([text_block(turn.text)], "end_turn", turn.chunks, turn.delay)
    if isinstance(turn, ThinkingTurn):
        thinking = {"type": "thinking", "thinking": turn.thinking, "signature": turn.signature}
        return Reply([thinking, text_block(turn.text)], "end_turn", turn.chunks, turn.delay)
    tool_id = turn.tool_use_id or f"toolu_{uuid.uuid4().hex[:24]}"
    tool = {"type": "tool_use", "id": tool_id, "name": turn.name, "input": dict(turn.input)}
    blocks = [text_block(turn.text), tool] if turn.text else [tool]
    return Reply(blocks, "tool_use")


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def _split(text: str, parts: int) -> list[str]:
    if parts <= 1 or len(text) <= 1:
        return [text]
    size = -(-len(text) // parts)  # ceiling division so we never emit more than `parts`
    return [text[i : i + size] for i in range(0, len(text), size)]


def estimate_tokens(payload: object) -> int:
    # Roughly 4 characters per token, like the real tokenizer on English text.
    return max(1, len(json.dumps(payload)) // 4)


def _usage(input_tokens: int, output_tokens: int) -> JSON:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(reply: Reply, model: str, input_tokens: int) -> JSON:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(input_tokens, estimate_tokens(reply.blocks)),
    }


def sse_events(reply: Reply, model: str, input_tokens: int) -> Iterator[tuple[JSON, float]]:
    """Yield (event, delay-before-next) pairs in the order the real API streams them."""
    start = message_json(reply, model, input_tokens)
    start.update(content=[], stop_reason=None, usage=_usage(input_tokens, 1))
    yield {"type": "message_start", "message": start}, 0.0
    for index, block in enumerate(reply.blocks):
        yield {"type": "content_block_start", "index": index, "content_block": _empty(block)}, 0.0
        if index == 0:
            yield {"type": "ping"}, 0.0
        for delta in _deltas(block, reply.chunks):
            yield {"type": "content_block_delta", "index": index, "delta": delta}, reply.delay
        yield {"type": "content_block_stop", "index": index}, 0.0
    final_usage = _usage(input_tokens, estimate_tokens(reply.blocks))
    del final_usage["service_tier"]  # message_delta usage carries cumulative counts only
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    yield {"type": "message_delta", "delta": delta, "usage": final_usage}, 0.0
    yield {"type": "message_stop"}, 0.0


def _empty(block: JSON) -> JSON:
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {**block, "input": {}}


def _deltas(block: JSON, chunks: int) -> Iterator[JSON]:
    if block["type"] == "text":
        for piece in _split(block["text"], chunks):
            yield {"type": "text_delta", "text": piece}
    elif block["type"] == "thinking":
        for piece in _split(block["thinking"], chunks):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}
    else:
        # The real API opens tool input with an empty fragment, then streams the JSON text.
        yield {"type": "input_json_delta", "partial_json": ""}
        for piece in _split(json.dumps(block["input"]), 2):
            yield {"type": "input_json_delta", "partial_json": piece}


def error_body(turn: ErrorTurn) -> JSON:
    return {"type": "error", "error": {"type": turn.error_type, "message": turn.message}}


# --------------------------------------------------------------------------- side calls


def is_side_call(body: Mapping[str, Any]) -> bool:
    """True for the CLI's housekeeping calls that must not consume a scripted turn.

    Observed with CLI 2.1.330: conversation calls always carry the tool list (even when
    every tool would be denied), while title/topic generation and the quota probe send
    no tools. A tiny ``max_tokens`` is a second tell for probes.
    """
    if not body.get("tools"):
        return True
    max_tokens = body.get("max_tokens")
    return isinstance(max_tokens, int) and max_tokens <= 1
