"""`claude-queue` commands for operators: run workers, reap lost runs, print ACL rules."""

from __future__ import annotations

import sys
from typing import cast

import click

from producer.cli_common import connect, echo_json, fail, settings_or_exit
from shared.exitcodes import ExitCode


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def reap(as_json: bool) -> None:
    """Declare runs lost whose worker died (for cron; every worker also does this)."""
    from worker.reaper import reap_all

    client = connect()
    lost = reap_all(client.store)
    if as_json:
        echo_json({"lost_runs": lost})
    else:
        click.echo(f"{lost} run(s) declared lost")


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--name", help="Worker name (default: host.pid).")
@click.option(
    "--mode",
    type=click.Choice(["simple", "fork"]),
    default="simple",
    show_default=True,
    help="simple: run jobs in the worker process, which can keep a session's CLI warm "
    "between runs (WARM_IDLE_S); fork: jobs run in a work horse process (RQ's model), "
    "forked ahead while the worker waits (a spare, `cq-spare` in ps) and kept for up to "
    "HORSE_RUNS jobs; no warm CLIs.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run a pool of this many worker processes.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port at /metrics (a pool: all members, merged).",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",  # noqa: S104 (a container is scraped on its pod address)
    show_default=True,
    help="Address of --metrics-port.",
)
@click.option("--metrics-dir", hidden=True, help="Pool members: write metrics into this folder.")
def worker(
    burst: bool,
    name: str | None,
    mode: str,
    processes: int,
    metrics_port: int | None,
    metrics_host: str,
    metrics_dir: str | None,
) -> None:
    """Run a worker: take prompt jobs from the queue and run the Claude CLI.

    It refuses to start if the Claude CLI cannot be found (see `claude-queue doctor`).
    """
    settings = settings_or_exit()
    from producer.doctor import start_problem

    problem = start_problem(settings)
    if problem is not None:
        fail(problem, ExitCode.USAGE)
    if metrics_port is not None or metrics_dir is not None:
        from shared.metrics import metrics_directory

        with metrics_directory(metrics_dir) as directory:
            from worker.metrics import run_with_metrics  # after the folder is chosen

            code = run_with_metrics(
                settings,
                directory=directory,
                serve_on=None if metrics_port is None else (metrics_host, metrics_port),
                processes=processes,
                burst=burst,
                name=name,
                mode="simple" if mode == "simple" else "fork",
            )
        sys.exit(code)
    if processes > 1:
        from worker.pool import run_pool

        sys.exit(run_pool(settings, processes=processes, burst=burst, name=name, mode=mode))
    from worker.entry import run_worker

    sys.exit(
        run_worker(settings, name=name, burst=burst, mode="simple" if mode == "simple" else "fork")
    )


@click.command()
@click.argument("role", type=click.Choice(["producer", "worker", "reader"]))
@click.option("--user", help="ACL user name (default: <key prefix>-<role>).")
@click.option(
    "--password-env",
    metavar="VAR",
    help="Set the password held in this environment variable (printed only as its SHA-256).",
)
def acl(role: str, user: str | None, password_env: str | None) -> None:
    """Print the Redis ACL SETUSER line of a role: producer, worker or reader.

    The rules follow the configured key prefix, queue and database. Run the line
    after `redis-cli` in a shell, or paste it into redis-cli's prompt. No password
    is ever printed: with --password-env the line sets its SHA-256 (#...); without
    it the line leaves the user's passwords as they are (a new user cannot log in
    until one is set). See the README's Security section for what each role can do.
    """
    import os

    from shared.acl import AclError, Role, database_of, role_rules, setuser_line

    settings = settings_or_exit()
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            fail(f"environment variable {password_env} is empty or unset", ExitCode.USAGE)
    try:
        rules = role_rules(
            cast(Role, role),
            key_prefix=settings.key_prefix,
            queue_name=settings.queue_name,
            database=database_of(settings.redis_url.get_secret_value()),
        )
        line = setuser_line(rules, user or f"{settings.key_prefix}-{role}", password=password)
    except AclError as exc:
        fail(str(exc), ExitCode.USAGE)
    click.echo(line)
    if password is None:
        click.echo(
            "note: this line sets no password; give one with --password-env VAR "
            "or add it yourself (ACL SETUSER <user> >password).",
            err=True,
        )
