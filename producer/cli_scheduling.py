"""`submit`'s scheduling options: --at, --in, --priority, --limit-key, --retry-lost, --retry-on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--at",
        "run_at",
        metavar="ISO8601",
        help="Start no earlier than this time, with its offset (2030-01-01T09:00:00+00:00).",
    ),
    click.option(
        "--in",
        "delay_s",
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help="Start no earlier than this many seconds from now.",
    ),
    click.option(
        "--priority",
        type=click.Choice(["high", "default", "low"]),
        default="default",
        show_default=True,
        help="Which list the run waits in (never ahead of its own session's earlier runs).",
    ),
    click.option("--limit-key", help="Concurrency-limit key (CLAUDE_QUEUE_CONCURRENCY_LIMITS)."),
    click.option(
        "--retry-lost",
        type=click.IntRange(0, 10),
        default=0,
        show_default=True,
        help="Submit the run again this many times if it is lost (off: runs have side effects).",
    ),
    click.option(
        "--retry-on",
        type=click.Choice(["overloaded", "rate_limited"]),
        multiple=True,
        help="Submit the run again if it failed with this API error (repeatable).",
    ),
]


def scheduling_options(command: F) -> F:
    """Add the scheduling options to a command (they go to PromptJob as they are named)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def parse_when(text: str | None) -> datetime | None:
    """--at: an ISO 8601 time; the job refuses one without an offset, and says so."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time (2030-01-01T09:00:00+00:00)", param_hint="--at"
        ) from None
