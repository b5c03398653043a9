"""Small words and numbers for people: plurals, ordinals, ages, durations, token counts. Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

_MINUTE = 60
_HOUR = 3600
_DAY = 86400


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 turn`, `2 turns` (or `many` when the plural is not word + s)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 112th."""
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th') }"


def duration(seconds: float) -> str:
    """0.11s, 42.0s, 3m 05s, 2h 03m, 4d 01h: two units at most, never a raw float tail."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < _MINUTE:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < _HOUR:
        return f"{whole // _MINUTE}m {whole % _MINUTE:02d}s"
    if whole < _DAY:
        return f"{whole // _HOUR}h {whole % _HOUR // _MINUTE:02d}m"
    return f"{whole // _DAY}d {whole % _DAY // _HOUR:02d}h"


def age(then: float | None, now: float) -> str:
    """How long ago, as a person says it: `just now`, `12s ago`, `5m ago`, `3h ago`, `2d ago`."""
    if then is None:
        return "-"
    seconds = int(now - then)
    if seconds < 5:
        return "just now"
    for unit, size in (("d", _DAY), ("h", _HOUR), ("m", _MINUTE)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def clock(ts: float) -> str:
    """Local wall-clock time of an epoch timestamp: 14:03:22."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def moment(ts: float, now: float) -> str:
    """An epoch time as a clock time and its distance: `14:30:00 (in 5m 00s)`."""
    delta = ts - now
    when = f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"
    day = "" if abs(delta) < 12 * _HOUR else time.strftime("%Y-%m-%d ", time.localtime(ts))
    return f"{day}{clock(ts)} ({when})"


def short(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def one_line(text: str, limit: int) -> str:
    """The first line of `text`, cut to `limit`, marking what was left out."""
    lines = text.strip().splitlines()
    if not lines:
        return ""
    first = lines[0]
    more = f" (+{plural(len(lines) - 1, 'line')})" if len(lines) > 1 else ""
    cut = first if len(first) <= limit else first[:limit] + "…"
    return cut + more


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)  # the API's usage object, verbatim: only ints are counted
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def tokens_in_out(usage: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(input incl. cache reads and writes, output) from an API usage object; None if absent."""
    if not usage:
        return None
    taken = sum(
        _count(usage, name)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return taken, _count(usage, "output_tokens")


def token_count(count: int) -> str:
    """1,234 or 12.3k or 1.2M."""
    if count < 10_000:
        return f"{count:,}"
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def cost(usd: float | None) -> str:
    """$0.0123 (4 places under a dollar), $1.23 above; `-` when unknown."""
    if usd is None:
        return "-"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"
