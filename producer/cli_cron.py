"""`claude-queue cron add|list|remove|run`: prompts submitted on a schedule (producer/cron.py).

Workers that run the scheduler (CLAUDE_QUEUE_SCHEDULER, the default) fire the crons;
with none running, nothing fires until one starts (then the latest missed tick, once).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, cast

import click
from rich.table import Table

from producer.cli_common import connect, echo_json, fail, make_console
from producer.cron import add_cron, list_crons, remove_cron, run_cron
from producer.errors import InvalidJobError
from shared.exitcodes import ExitCode
from shared.jobs import OnBusy


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_object(value: str | None, option: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=option) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return parsed


@click.group()
def cron() -> None:
    """Prompts submitted on a schedule (UTC), by the workers that run the scheduler."""


@cron.command("add")
@click.argument("name")
@click.option("--schedule", required=True, help='Cron expression (UTC), e.g. "0 9 * * 1-5".')
@click.option(
    "--session-template",
    help="New session per firing: {name}, {date}, {time}, {tick}, e.g. triage-{date}.",
)
@click.option("--session", "session_id", help="One fixed session for every firing.")
@click.option("--prompt", required=True, help='The prompt ("-" reads it from stdin).')
@click.option("--cwd", help="Absolute working directory for the CLI on the worker.")
@click.option("--model", help="Model name passed to the CLI.")
@click.option("--profile", help="Permission profile defined in worker settings.")
@click.option("--metadata", "metadata_json", help="JSON object kept with each run.")
@click.option("--max-turns", type=int, help="Limit agentic turns.")
@click.option("--timeout", "timeout_s", type=float, help="Wall-clock limit of a run, seconds.")
@click.option("--priority", type=click.Choice(["high", "default", "low"]), help="Run priority.")
@click.option("--limit-key", help="Concurrency-limit key (CLAUDE_QUEUE_CONCURRENCY_LIMITS).")
@click.option("--retry-lost", type=int, help="Submit a lost run again this many times.")
@click.option(
    "--retry-on",
    multiple=True,
    type=click.Choice(["overloaded", "rate_limited"]),
    help="API errors that submit a failed run again (repeatable).",
)
@click.option("--new-conversation", is_flag=True, help="Do not resume the session's conversation.")
@click.option(
    "--on-busy",
    type=click.Choice(["enqueue", "reject", "interrupt"]),
    default="enqueue",
    show_default=True,
    help="While the previous firing is queued or running: submit anyway, skip, or cancel it.",
)
@click.option("--replace", is_flag=True, help="Replace a cron of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the cron as one JSON object.")
def cron_add(
    name: str,
    schedule: str,
    session_template: str | None,
    session_id: str | None,
    prompt: str,
    cwd: str | None,
    model: str | None,
    profile: str | None,
    metadata_json: str | None,
    max_turns: int | None,
    timeout_s: float | None,
    priority: str | None,
    limit_key: str | None,
    retry_lost: int | None,
    retry_on: tuple[str, ...],
    new_conversation: bool,
    on_busy: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Add cron NAME: submit --prompt on --schedule, in --session-template or --session."""
    if prompt == "-":
        prompt = sys.stdin.read()
    optional: dict[str, Any] = {
        "cwd": cwd,
        "model": model,
        "profile": profile,
        "metadata": _json_object(metadata_json, "--metadata"),
        "max_turns": max_turns,
        "timeout_s": timeout_s,
        "priority": priority,
        "limit_key": limit_key,
        "retry_lost": retry_lost,
        "retry_on": list(retry_on) or None,
        "new_conversation": new_conversation or None,
    }
    fields = {"prompt": prompt, **{k: v for k, v in optional.items() if v is not None}}
    client = connect()
    try:
        spec = add_cron(
            client,
            name,
            schedule=schedule,
            session_template=session_template,
            session_id=session_id,
            on_busy=cast(OnBusy, on_busy),
            replace=replace,
            **fields,
        )
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if as_json:
        echo_json(spec.model_dump(mode="json"))
    else:
        click.echo(f"cron {spec.name} added: {spec.schedule} (UTC)")


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per cron.")
def cron_list(as_json: bool) -> None:
    """Every cron, with its next tick and its last firing."""
    infos = list_crons(connect())
    if as_json:
        for info in infos:
            echo_json(
                {
                    **info.spec.model_dump(mode="json"),
                    "next_tick": info.next_tick,
                    "last_tick": info.last_tick,
                    "last_session_id": info.last_session_id,
                    "last_run_id": info.last_run_id,
                }
            )
        return
    table = Table("name", "schedule", "session", "on busy", "next", "last", "last run")
    for info in infos:
        spec = info.spec
        table.add_row(
            spec.name,
            spec.schedule,
            spec.session_id or spec.session_template or "",
            spec.on_busy,
            _when(info.next_tick),
            _when(info.last_tick),
            info.last_run_id or "-",
        )
    make_console().print(table)


@cron.command("remove")
@click.argument("name")
def cron_remove(name: str) -> None:
    """Delete cron NAME (a firing already submitted still runs)."""
    if not remove_cron(connect(), name):
        fail(f"no cron named {name!r}", ExitCode.NOT_FOUND)
    click.echo(f"cron {name} removed")


@cron.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the firing as one JSON object.")
def cron_run(name: str, as_json: bool) -> None:
    """Fire cron NAME now, outside its schedule (its on_busy still applies)."""
    try:
        firing = run_cron(connect(), name)
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.NOT_FOUND)
    if as_json:
        echo_json(
            {
                "name": firing.name,
                "session_id": firing.session_id,
                "run_id": firing.run_id,
                "skipped": firing.skipped,
            }
        )
    elif firing.run_id is None:
        click.echo(f"cron {name}: nothing submitted ({firing.skipped})")
    else:
        click.echo(f"queued run {firing.run_id} in session {firing.session_id}")
