"""`claude-queue`: the command line for producers, operators and workers."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from typing import Any, cast

import click
import redis
from pydantic import ValidationError
from rich.console import Console

from producer.cancelling import CancelOutcome
from producer.client import Client
from producer.errors import InvalidJobError, RedisUnavailable, SessionBusy, redis_errors
from producer.render import Renderer
from shared.events import Envelope, FinishedData, RunStatus
from shared.exitcodes import ExitCode
from shared.jobs import OnBusy
from shared.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_environment()
    except SettingsError as exc:
        click.echo(f"error: invalid configuration: {exc}", err=True)
        sys.exit(ExitCode.USAGE)


def _redis_down(exc: RedisUnavailable) -> None:
    """One line, no traceback, exit 3: Redis did not answer."""
    click.echo(f"error: {exc}. Set CLAUDE_QUEUE_REDIS_URL or start Redis.", err=True)
    sys.exit(ExitCode.REDIS_UNREACHABLE)


def _client() -> Client:
    settings = _settings()
    client = Client(settings)
    try:
        with redis_errors(settings.redis_url_redacted):
            client.redis.ping()
    except RedisUnavailable as exc:
        _redis_down(exc)
    except redis.RedisError as exc:  # e.g. a wrong password: configuration
        click.echo(f"error: Redis at {settings.redis_url_redacted} refused us: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    return client


class _Group(click.Group):
    """Turns a Redis outage in the middle of any command into one line and exit 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedisUnavailable as exc:
            _redis_down(exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # below the client (reap)
            _redis_down(RedisUnavailable.from_error(exc))


def _run_status(envelope: Envelope) -> RunStatus | None:
    """How the run of a `finished` envelope ended; None if unknown to this client."""
    try:
        data = envelope.typed_data()
    except ValidationError:  # a broken or reshaped payload: not a success we can vouch for
        return None
    return data.known_status if isinstance(data, FinishedData) else None


def _follow(envelopes: Iterable[Envelope], as_json: bool) -> RunStatus | None:
    renderer = Renderer(Console(highlight=False))
    status: RunStatus | None = None
    for envelope in envelopes:
        if as_json:
            click.echo(envelope.model_dump_json())
        else:
            renderer.show(envelope)
        if envelope.is_terminal:
            status = _run_status(envelope)
    return status


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from shared.version import package_version

        click.echo(f"claude-queue {package_version()}")
        ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Run Claude Code sessions on background workers, through Redis.

    Configuration comes from CLAUDE_QUEUE_* environment variables
    (CLAUDE_QUEUE_REDIS_URL, CLAUDE_QUEUE_QUEUE_NAME, CLAUDE_QUEUE_CLAUDE_BIN, ...);
    see the README for the full table.
    """


@main.command()
@click.argument("prompt")
@click.option("--session", "session_id", required=True, help="Session id (letters, digits, _ . -).")
@click.option("--cwd", help="Absolute working directory for the CLI on the worker.")
@click.option("--model", help="Model name passed to the CLI.")
@click.option("--context", "context_json", help="JSON object prepended to the prompt.")
@click.option("--profile", help="Permission profile defined in worker settings.")
@click.option("--partial", is_flag=True, help="Include partial message stream events.")
@click.option("--max-turns", type=int, help="Limit agentic turns.")
@click.option("--timeout", "timeout_s", type=float, help="Wall-clock limit of the run, seconds.")
@click.option("--new-conversation", is_flag=True, help="Do not resume the session's conversation.")
@click.option(
    "--on-busy",
    type=click.Choice(["enqueue", "reject", "interrupt"]),
    default="enqueue",
    show_default=True,
    help="If the session has a run pending: wait behind it, refuse, or cancel it.",
)
@click.option(
    "--resume-policy",
    type=click.Choice(["fail", "start_fresh"]),
    default="fail",
    show_default=True,
    help="If the conversation cannot be resumed: fail the run, or start fresh.",
)
@click.option("--follow", is_flag=True, help="Stream the run's events until it finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print envelopes as JSON lines.")
def submit(
    prompt: str,
    session_id: str,
    cwd: str | None,
    model: str | None,
    context_json: str | None,
    profile: str | None,
    partial: bool,
    max_turns: int | None,
    timeout_s: float | None,
    new_conversation: bool,
    on_busy: str,
    resume_policy: str,
    follow: bool,
    as_json: bool,
) -> None:
    """Queue PROMPT for a session ("-" reads the prompt from stdin).

    A prompt that starts with "-" goes after "--": claude-queue submit --session s -- "--x".
    With --follow, exits 0 if the run succeeded and 1 otherwise.
    """
    if prompt == "-":
        prompt = sys.stdin.read()
    context = None
    if context_json is not None:
        try:
            context = json.loads(context_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--context") from None
    fields: dict[str, Any] = {"session_id": session_id, "prompt": prompt}
    optional = {
        "cwd": cwd,
        "model": model,
        "context": context,
        "profile": profile,
        "max_turns": max_turns,
        "timeout_s": timeout_s,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if partial:
        fields["include_partial_messages"] = True
    fields["new_conversation"] = new_conversation
    fields["resume_policy"] = resume_policy
    client = _client()
    try:
        handle = client.submit(on_busy=cast(OnBusy, on_busy), **fields)
    except (InvalidJobError, SessionBusy) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    if not follow:
        payload = {
            "session_id": handle.session_id,
            "run_id": handle.run_id,
            "seq": handle.queued_seq,
        }
        click.echo(
            json.dumps(payload)
            if as_json
            else f"queued run {handle.run_id} "
            f"in session {handle.session_id} (seq {handle.queued_seq})"
        )
        return
    status = _follow(handle.stream(), as_json)
    sys.exit(ExitCode.OK if status is RunStatus.SUCCEEDED else ExitCode.RUN_FAILED)


@main.command()
@click.argument("session_id")
@click.option("--after", type=int, default=0, show_default=True, help="Replay after this seq.")
@click.option("--no-follow", is_flag=True, help="Print the log and exit; do not wait.")
@click.option("--until-finished", is_flag=True, help="Stop at the next finished event.")
@click.option("--json", "as_json", is_flag=True, help="Print envelopes as JSON lines.")
def tail(session_id: str, after: int, no_follow: bool, until_finished: bool, as_json: bool) -> None:
    """Replay a session's events, then follow new ones live (Ctrl-C to stop)."""
    client = _client()
    stream = client.stream(
        session_id, after=after, follow=not no_follow, stop_at_finish=until_finished
    )
    with contextlib.suppress(KeyboardInterrupt):
        _follow(stream, as_json)


@main.command()
@click.argument("session_id")
@click.option("--run", "run_id", help="Run to cancel (default: the session's current run).")
@click.option("--wait", is_flag=True, help="Wait until the owning worker has ended the run.")
@click.option("--timeout", "timeout_s", type=float, help="How long --wait waits, seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def cancel(
    session_id: str, run_id: str | None, wait: bool, timeout_s: float | None, as_json: bool
) -> None:
    """Cancel a queued or running run; the CLI and everything it started are killed."""
    result = _client().cancel(session_id, run_id=run_id, wait=wait, timeout_s=timeout_s)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"{result.outcome.value} (session {session_id}, run {result.run_id or '-'})")
    unreachable = result.outcome is CancelOutcome.OWNER_UNREACHABLE
    sys.exit(ExitCode.RUN_FAILED if unreachable else ExitCode.OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Queue depth, workers, and runs in progress."""
    info = _client().status()
    if as_json:
        click.echo(json.dumps(info.as_dict()))
        return
    console = Console(highlight=False)
    console.print(f"queue [bold]{info.queue}[/]: {info.queued} queued")
    console.print(f"workers: {len(info.workers)}")
    for worker_info in info.workers:
        console.print(
            f"  {worker_info.name}  {worker_info.state}  job={worker_info.current_job or '-'}"
        )
    console.print(f"running runs: {len(info.running)}")
    for run_id, session_id in info.running.items():
        console.print(f"  {run_id}  session={session_id}")


@main.command()
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON lines.")
def sessions(limit: int, as_json: bool) -> None:
    """List sessions, most recently active first."""
    infos = _client().sessions(limit=limit)
    if as_json:
        for info in infos:
            click.echo(json.dumps(info.as_dict()))
        return
    console = Console(highlight=False)
    if not infos:
        console.print("no sessions")
    for info in infos:
        console.print(
            f"{info.session_id}  [bold]{info.state}[/]  last run {info.last_run_id or '-'}  "
            f"claude {info.claude_session_id or '-'}  {info.events} events  "
            f"transcript {info.transcript_bytes} B"
        )


@main.group()
def session() -> None:
    """Show or delete one session."""


@session.command("show")
@click.argument("session_id")
def session_show(session_id: str) -> None:
    """Everything known about a session, as JSON."""
    try:
        info = _client().session(session_id)
    except InvalidJobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    if info is None:
        click.echo(f"error: no session {session_id!r}", err=True)
        sys.exit(ExitCode.RUN_FAILED)
    click.echo(json.dumps(info.as_dict(), indent=2))


@session.command("delete")
@click.argument("session_id")
@click.option("--force", is_flag=True, help="Cancel queued and running runs first.")
def session_delete(session_id: str, force: bool) -> None:
    """Delete a session's log, transcript and state."""
    try:
        removed = _client().delete_session(session_id, force=force)
    except (InvalidJobError, SessionBusy) as exc:  # a bad id is refused before any delete
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    click.echo(f"deleted session {session_id} ({removed} keys)")


@main.command()
def reap() -> None:
    """Declare runs lost whose worker died (for cron; every worker also does this)."""
    from worker.reaper import reap_all

    client = _client()
    lost = reap_all(client.store)
    click.echo(f"{lost} run(s) declared lost")


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--name", help="Worker name (default: host.pid).")
@click.option(
    "--mode",
    type=click.Choice(["fork", "simple"]),
    default="fork",
    show_default=True,
    help="fork: a work horse per job (RQ default); simple: run jobs in-process.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run a pool of this many worker processes.",
)
def worker(burst: bool, name: str | None, mode: str, processes: int) -> None:
    """Run a worker: take prompt jobs from the queue and run the Claude CLI."""
    settings = _settings()
    if processes > 1:
        from worker.pool import run_pool

        sys.exit(run_pool(settings, processes=processes, burst=burst, name=name, mode=mode))
    from worker.rqworker import run_worker

    sys.exit(
        run_worker(settings, name=name, burst=burst, mode="simple" if mode == "simple" else "fork")
    )


@main.command()
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

    settings = _settings()
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            click.echo(f"error: environment variable {password_env} is empty or unset", err=True)
            sys.exit(ExitCode.USAGE)
    try:
        rules = role_rules(
            cast(Role, role),
            key_prefix=settings.key_prefix,
            queue_name=settings.queue_name,
            database=database_of(settings.redis_url.get_secret_value()),
        )
        line = setuser_line(rules, user or f"{settings.key_prefix}-{role}", password=password)
    except AclError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    click.echo(line)
    if password is None:
        click.echo(
            "note: this line sets no password; give one with --password-env VAR "
            "or add it yourself (ACL SETUSER <user> >password).",
            err=True,
        )


if __name__ == "__main__":
    main()
