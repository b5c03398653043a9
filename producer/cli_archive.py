"""`claude-queue archiver` and `claude-queue archive ...`: the PostgreSQL archive.

- archiver: drain the outbox into PostgreSQL in the foreground (workers also do it).
- archive prune / sessions / totals: retention, search and totals of archived runs.
`sessions --archived` (producer/cli_sessions.py) prints through `print_archived`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich.table import Table

from producer.cli_common import connect, echo_json, fail, make_console, settings_or_exit
from shared.exitcodes import ExitCode
from shared.logging import configure_logging
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.archive import SessionPage

_JSON_LINES = "Print one JSON object per line."


def _archive_settings() -> Settings:
    from producer.archive import ArchiveError, require_archive  # psycopg: here only

    settings = settings_or_exit()
    try:
        require_archive(settings)
    except ArchiveError as exc:
        fail(str(exc), ExitCode.USAGE)
    return settings


@click.command()
@click.option("--burst", is_flag=True, help="Archive what the outbox holds now, then exit.")
@click.option("--name", help="Consumer name in the archivers group (default: host.pid).")
def archiver(burst: bool, name: str | None) -> None:
    """Copy finished runs into the PostgreSQL archive (every worker does this too)."""
    from worker.archiver import Archiver

    settings = _archive_settings()
    configure_logging(settings)
    consumer = name or f"archiver.{socket.gethostname()}.{os.getpid()}"
    drainer = Archiver(settings, consumer=consumer)
    if burst:
        left = drainer.drain(deadline=time.monotonic() + settings.shutdown_grace_s)
        drainer.close()
        if left:
            fail("the outbox was not drained in time; see the log", ExitCode.USAGE)
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        drainer.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    drainer.run()
    drainer.close()


@click.group()
def archive() -> None:
    """Prune, search and total the PostgreSQL archive of finished runs."""


@archive.command("prune")
@click.option(
    "--days",
    type=click.IntRange(1, 100_000),
    help="Delete sessions idle this many days (default: ARCHIVE_RETENTION_DAYS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def archive_prune(days: int | None, as_json: bool) -> None:
    """Delete archived sessions whose newest run finished more than --days ago."""
    settings = _archive_settings()
    days = days or settings.archive_retention_days
    if days < 1:
        fail("give --days or set CLAUDE_QUEUE_ARCHIVE_RETENTION_DAYS", ExitCode.USAGE)
    from producer.archive import ArchiveError, ArchiveReader

    reader = ArchiveReader(settings)
    try:
        pruned = reader.prune(days)
    except ArchiveError as exc:
        fail(str(exc), ExitCode.USAGE)
    finally:
        reader.close()
    if as_json:
        echo_json({"pruned_sessions": pruned, "days": days})
    else:
        click.echo(f"pruned {len(pruned)} {'session' if len(pruned) == 1 else 'sessions'}")


def search_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of `archive sessions` and `sessions --archived`."""
    for option in reversed(
        [
            click.option("--since", help="Finished within this long: 7d, 12h, 30m, 2w."),
            click.option("--status", help="With a run of this final status (e.g. failed)."),
            click.option("--meta", multiple=True, help="Metadata key=value (repeatable)."),
            click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True),
            click.option("--offset", type=click.IntRange(0), default=0, show_default=True),
        ]
    ):
        command = option(command)
    return command


def print_archived(
    *,
    since: str | None,
    status: str | None,
    meta: tuple[str, ...],
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List archived sessions matching the filters (exit 2 for a bad filter)."""
    from producer.archive import ArchiveError
    from shared.archive import parse_meta, parse_since

    _archive_settings()
    try:
        since_ts = None if since is None else parse_since(since)
        pairs = parse_meta(meta)
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)
    client = connect()
    try:
        page = client.search_sessions(
            since=since_ts, status=status, meta=pairs, limit=limit, offset=offset
        )
    except ValidationError as exc:
        fail(f"bad filter: {exc.errors()[0]['msg']}", ExitCode.USAGE)
    except ArchiveError as exc:
        fail(str(exc), ExitCode.USAGE)
    finally:
        client.close()
    _print_page(page, as_json)


def _print_page(page: SessionPage, as_json: bool) -> None:
    if as_json:
        for summary in page.sessions:
            echo_json(summary.as_dict())
        return
    console = make_console()
    if not page.sessions:
        console.print("no archived sessions")
        return
    table = Table("session", "runs", "last status", "finished", "cost", "models", "profiles")
    for s in page.sessions:
        finished = time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.last_finished_at))
        cost = "" if s.cost_usd is None else f"${s.cost_usd:.4f}"
        models, profiles = ", ".join(s.models), ", ".join(s.profiles)
        table.add_row(s.session_id, str(s.runs), s.last_status, finished, cost, models, profiles)
    console.print(table)
    if page.next_offset is not None:
        console.print(f"more: --offset {page.next_offset}")


@archive.command("sessions")
@search_options
@click.option("--json", "as_json", is_flag=True, help=_JSON_LINES)
def archive_sessions(
    since: str | None,
    status: str | None,
    meta: tuple[str, ...],
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Archived sessions, newest first (same as `sessions --archived`)."""
    print_archived(
        since=since, status=status, meta=meta, limit=limit, offset=offset, as_json=as_json
    )


@archive.command("totals")
@click.option("--since", help="Runs finished within this long: 7d, 12h, 30m, 2w.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_LINES)
def archive_totals(since: str | None, as_json: bool) -> None:
    """Runs, cost and tokens of archived runs by day (UTC), model and profile."""
    from producer.archive import ArchiveError
    from shared.archive import parse_since

    _archive_settings()
    try:
        since_ts = None if since is None else parse_since(since)
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)
    client = connect()
    try:
        rows = client.archive_totals(since=since_ts)
    except ArchiveError as exc:
        fail(str(exc), ExitCode.USAGE)
    finally:
        client.close()
    if as_json:
        for row in rows:
            echo_json(row.as_dict())
        return
    table = Table("day", "model", "profile", "runs", "cost", "tokens in", "tokens out")
    for r in rows:
        table.add_row(
            r.day,
            r.model or "",
            r.profile or "",
            str(r.runs),
            f"${r.cost_usd:.4f}",
            str(r.input_tokens),
            str(r.output_tokens),
        )
    make_console().print(table)
