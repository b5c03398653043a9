"""`claude-queue doctor`: run every health check and print each with its fix."""

from __future__ import annotations

import json
import sys

import click

from shared.exitcodes import ExitCode

_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--offline", is_flag=True, help="Skip the check that sends the CLI a real one-turn prompt."
)
def doctor(as_json: bool, offline: bool) -> None:
    """Check Redis, the Claude CLI, workers, clocks and profiles; exit 0 if healthy, 1 if not.

    Checks: redis (reachable, version), appendonly, maxmemory-policy (must be
    noeviction), cli (found, runs, version vs the tested one), cli-auth (a real
    one-turn prompt; skipped with --offline), workers (alive, last heartbeat),
    clock-skew (this host vs Redis TIME), profiles. Each is ok, warn or fail;
    only a fail makes the exit code 1.
    """
    from producer.doctor import Check, Report, Status, run_checks
    from shared.envnames import SettingsError
    from shared.settings import Settings

    try:
        settings = Settings.from_environment()
    except SettingsError as exc:
        report = Report(
            [Check("settings", Status.FAIL, str(exc), "fix the CLAUDE_QUEUE_* variable")]
        )
    else:
        report = run_checks(settings, offline=offline)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for check in report.checks:
            click.echo(f"{_MARKS[check.status.value]}  {check.name}: {check.detail}")
            if check.fix and check.status is not Status.OK:
                click.echo(f"      fix: {check.fix}")
        if offline:
            click.echo("      cli-auth: skipped (--offline)")
        click.echo("healthy" if report.healthy else "not healthy")
    sys.exit(ExitCode.OK if report.healthy else ExitCode.RUN_FAILED)
