"""Shrink an oversized JSON value under a byte limit by cutting its longest strings. Pure.

Only string values are cut (never keys, numbers or structure), so the value keeps
its shape and an event rebuilt from it stays valid for its model. Each cut string
keeps its beginning and ends with a marker naming how much was removed:

    "xxxxxxxx…[truncated 3145728 bytes]"

The longest strings are cut first, all down to one common length (a water level),
so two big tool results each keep a fair share instead of one losing everything.
Strings of up to `MIN_KEPT_BYTES` (ids, types, roles) are never cut.

Sizes are those of compact JSON (`separators=(",", ":")`, non-ASCII unescaped) in
UTF-8, which is how pydantic encodes events too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MARKER = "…[truncated {} bytes]"
# A cut string ends with this; the number is the UTF-8 bytes that were removed.
MARKER_RE = re.compile(r"…\[truncated (\d+) bytes\]\Z")
MIN_KEPT_BYTES = 64


@dataclass(frozen=True, slots=True)
class Truncated:
    """The outcome of `truncate_json`."""

    value: Any
    size: int
    fits: bool
    cut_strings: int = 0
    cut_bytes: int = 0


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON."""
    return _utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def truncate_json(value: Any, max_bytes: int) -> Truncated:
    """`value` with its longest strings cut (and marked) so it encodes in `max_bytes`.

    Returns `value` itself when it already fits. `fits` is False when even cutting
    every string down to `MIN_KEPT_BYTES` is not enough (the cuts are still made).
    """
    size = encoded_size(value)
    if size <= max_bytes:
        return Truncated(value=value, size=size, fits=True)
    sizes = [_string_size(text) for text in _strings(value)]
    # An upper bound of any marker's size: no cut can remove more than the whole value.
    marker_max = _utf8_len(MARKER.format(size))
    level = _water_level(sizes, size - max_bytes, marker_max)
    counts = [0, 0]
    cut = _rebuild(value, iter(sizes), level + marker_max, level, counts)
    new_size = encoded_size(cut)
    return Truncated(
        value=cut,
        size=new_size,
        fits=new_size <= max_bytes,
        cut_strings=counts[0],
        cut_bytes=counts[1],
    )


def _water_level(sizes: list[int], excess: int, marker_max: int) -> int:
    """The highest kept length whose cuts save at least `excess` bytes (or the minimum)."""

    # Only strings longer than the lowest level (plus a marker) can ever be cut.
    long = [s for s in sizes if s > MIN_KEPT_BYTES + marker_max]

    def saved(level: int) -> int:
        return sum(s - level - marker_max for s in long if s > level + marker_max)

    low, high = MIN_KEPT_BYTES, max(long, default=MIN_KEPT_BYTES)
    if saved(low) < excess:
        return low  # cannot fit: cut as far as allowed and let the caller decide
    while low < high:  # saved() shrinks as the level rises: find its last level >= excess
        middle = (low + high + 1) // 2
        if saved(middle) >= excess:
            low = middle
        else:
            high = middle - 1
    return low


def _strings(value: Any) -> Iterator[str]:
    """Every string value, depth first, in the order `_rebuild` visits them."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _rebuild(value: Any, sizes: Iterator[int], over: int, level: int, counts: list[int]) -> Any:
    """A copy of `value` with each string longer than `over` bytes cut to `level`."""
    if isinstance(value, str):
        size = next(sizes)
        if size <= over:
            return value
        kept = _prefix(value, level)
        removed = _utf8_len(value[len(kept) :])
        counts[0] += 1
        counts[1] += removed
        return kept + MARKER.format(removed)
    if isinstance(value, dict):
        return {key: _rebuild(item, sizes, over, level, counts) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebuild(item, sizes, over, level, counts) for item in value]
    return value


def _prefix(text: str, max_bytes: int) -> str:
    """A prefix of `text` whose JSON-escaped UTF-8 form is at most `max_bytes`."""
    length = min(len(text), max_bytes)
    size = _string_size(text[:length])
    if size > max_bytes:
        # Scale by the average width first (exact for uniform text), then trim: every
        # character costs at least one byte, so dropping `size - max_bytes` more suffices.
        length = length * max_bytes // size
        size = _string_size(text[:length])
        if size > max_bytes:
            length = max(0, length - (size - max_bytes))
    return text[:length]


def _string_size(text: str) -> int:
    """Bytes of `text` inside its JSON quotes (escapes included)."""
    return _utf8_len(json.dumps(text, ensure_ascii=False)) - 2


def _utf8_len(text: str) -> int:
    # isascii() is O(1) in CPython: the common case needs no encoding pass.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
