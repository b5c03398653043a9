"""`sessions`, `session show`, `session delete` and `status`: tables for people,
one JSON object per line (or one object) with --json."""

from __future__ import annotations

import time

import click

from producer.cli_approvals import request_summary
from producer.cli_archive import print_archived
from producer.cli_common import connect, echo_json, fail, known_session, make_console
from producer.cli_completion import session_argument
from producer.errors import InvalidJobError, SessionBusy
from producer.render_runs import (
    runs_table,
    session_row,
    sessions_table,
    status_summary,
    summarize_runs,
    workers_table,
)
from producer.status import with_activity
from shared.exitcodes import ExitCode

_JSON_LINES_HELP = "Print one JSON object per line."
_JSON_HELP = "Print one JSON object."


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="At most this many.",
)
@click.option(
    "--archived",
    is_flag=True,
    help="Search the PostgreSQL archive instead (CLAUDE_QUEUE_ARCHIVE_DSN; at most 1000).",
)
@click.option("--since", help="--archived: finished within this long: 7d, 12h, 30m, 2w.")
@click.option("--status", "run_status", help="--archived: with a run of this final status.")
@click.option("--meta", multiple=True, help="--archived: metadata key=value (repeatable).")
@click.option("--offset", type=click.IntRange(0), default=0, help="--archived: skip this many.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_LINES_HELP)
def sessions(
    limit: int,
    archived: bool,
    since: str | None,
    run_status: str | None,
    meta: tuple[str, ...],
    offset: int,
    as_json: bool,
) -> None:
    """List sessions, most recently active first: state, runs, last status, cost.

    Runs, last status and cost are read from each session's event log. With
    --archived, the sessions kept in the PostgreSQL archive that match the filters.
    """
    if archived:
        print_archived(
            since=since,
            status=run_status,
            meta=meta,
            limit=min(limit, 1000),
            offset=offset,
            as_json=as_json,
        )
        return
    if since is not None or run_status is not None or meta or offset:
        fail("--since, --status, --meta and --offset go with --archived", ExitCode.USAGE)
    client = connect()
    rows = [
        session_row(info, summarize_runs(client.history(info.session_id)))
        for info in client.sessions(limit=limit)
    ]
    if as_json:
        for row in rows:
            echo_json(row.as_dict())
        return
    console = make_console()
    if not rows:
        console.print("no sessions")
        return
    console.print(sessions_table(rows, time.time()))


@click.group()
def session() -> None:
    """Show or delete one session."""


@session.command("show")
@session_argument()
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP + " (the raw form)")
def session_show(session_id: str, as_json: bool) -> None:
    """A session's state, its runs as a table, and its open permission requests.

    Exits 4 if there is no such session.
    """
    client = connect()
    info = known_session(client, session_id)
    runs = summarize_runs(client.history(session_id))
    requests = [request_summary(o) for o in client.open_requests(session_id)]
    if as_json:
        shown = info.as_dict()
        shown["runs"] = [run.as_dict() for run in runs]
        shown["open_requests"] = requests
        echo_json(shown)
        return
    console = make_console()
    now = time.time()
    console.print(f"session {info.session_id} · {info.state}", markup=False)
    console.print(
        f"claude session {info.claude_session_id or '-'} · cwd {info.cwd or '-'} · "
        f"{info.events} events · transcript {info.transcript_bytes} B",
        style="dim",
        markup=False,
    )
    if runs:
        console.print(runs_table(runs, now))
    else:
        console.print("no runs in the log")
    for request in requests:
        console.print(
            f"open request {request['request_id']} · {request['tool_name']} · "
            f"{request['input_preview']} · expires in {request['expires_in_s']} s",
            markup=False,
        )


@session.command("delete")
@session_argument()
@click.option("--force", is_flag=True, help="Cancel queued and running runs first.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def session_delete(session_id: str, force: bool, as_json: bool) -> None:
    """Delete a session's log, transcript and state.

    Exits 4 if there is no such session, 2 if it has runs pending (without --force).
    """
    client = connect()
    if not client.settings.archive_dsn.get_secret_value():  # else it may be archived only
        known_session(client, session_id)
    try:
        removed = client.delete_session(session_id, force=force)
    except (InvalidJobError, SessionBusy) as exc:  # a bad id is refused before any delete
        fail(str(exc), ExitCode.USAGE)
    if as_json:
        echo_json({"session_id": session_id, "deleted_keys": removed})
    else:
        click.echo(f"deleted session {session_id} ({removed} keys)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def status(as_json: bool) -> None:
    """Queue depth, workers with their current run, failed runs in the last hour."""
    client = connect()
    info = with_activity(client.redis, client.settings, client.status())
    if as_json:
        echo_json(info.as_dict())
        return
    console = make_console()
    console.print(status_summary(info))
    if info.workers:
        console.print(workers_table(info, time.time()))
    else:
        console.print("no workers (start one: claude-queue worker)")
