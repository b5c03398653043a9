"""`claude-queue`: the command line for producers, operators and workers."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable
from typing import Any, cast

import click
from pydantic import ValidationError
from rich.console import Console

from producer.cancelling import CancelOutcome
from producer.cli_admin import acl, reap, worker
from producer.cli_approvals import (
    InlineAnswers,
    approve,
    deny,
    is_interactive,
    request_summary,
    requests_command,
)
from producer.cli_common import Group, connect, fail
from producer.cli_serve import serve
from producer.client import Client
from producer.errors import InvalidJobError, SessionBusy
from producer.render import Renderer
from shared.control import MAX_GRACE_S
from shared.events import Envelope, FinishedData, RunStatus
from shared.exitcodes import ExitCode
from shared.jobs import OnBusy


def _run_status(envelope: Envelope) -> RunStatus | None:
    """How the run of a `finished` envelope ended; None if unknown to this client."""
    try:
        data = envelope.typed_data()
    except ValidationError:  # a broken or reshaped payload: not a success we can vouch for
        return None
    return data.known_status if isinstance(data, FinishedData) else None


def _follow(envelopes: Iterable[Envelope], as_json: bool, client: Client) -> RunStatus | None:
    """Print each event; at a terminal, ask about each open permission request inline."""
    renderer = Renderer(Console(highlight=False))
    answers = InlineAnswers(client) if is_interactive(as_json) else None
    status: RunStatus | None = None
    for envelope in envelopes:
        if as_json:
            click.echo(envelope.model_dump_json())
        else:
            renderer.show(envelope)
        if answers is not None:
            answers.offer(envelope)
        if envelope.is_terminal:
            status = _run_status(envelope)
    return status


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from shared.version import package_version

        click.echo(f"claude-queue {package_version()}")
        ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    With --follow, exits 0 if the run succeeded and 1 otherwise. On a terminal
    (and without --json), --follow asks about each permission request inline:
    Allow? [y/N] (an empty answer denies).
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
    client = connect()
    try:
        handle = client.submit(on_busy=cast(OnBusy, on_busy), **fields)
    except (InvalidJobError, SessionBusy) as exc:
        fail(str(exc), ExitCode.USAGE)
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
    status = _follow(handle.stream(), as_json, client)
    sys.exit(ExitCode.OK if status is RunStatus.SUCCEEDED else ExitCode.RUN_FAILED)


@main.command()
@click.argument("session_id")
@click.option("--after", type=int, default=0, show_default=True, help="Replay after this seq.")
@click.option("--no-follow", is_flag=True, help="Print the log and exit; do not wait.")
@click.option("--until-finished", is_flag=True, help="Stop at the next finished event.")
@click.option("--json", "as_json", is_flag=True, help="Print envelopes as JSON lines.")
def tail(session_id: str, after: int, no_follow: bool, until_finished: bool, as_json: bool) -> None:
    """Replay a session's events, then follow new ones live (Ctrl-C to stop).

    On a terminal (and without --json) each open permission request is asked
    about inline: Allow? [y/N].
    """
    client = connect()
    stream = client.stream(
        session_id, after=after, follow=not no_follow, stop_at_finish=until_finished
    )
    with contextlib.suppress(KeyboardInterrupt, click.Abort):  # Abort: Ctrl-C at a prompt
        _follow(stream, as_json, client)


@main.command()
@click.argument("session_id")
@click.option("--run", "run_id", help="Run to cancel (default: the session's current run).")
@click.option("--wait", is_flag=True, help="Wait until the owning worker has ended the run.")
@click.option(
    "--timeout", "timeout_s", type=float, help="How long --wait waits after the grace, seconds."
)
@click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(0.0, MAX_GRACE_S),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Let a running run end its turn first: the worker asks the CLI to end its turn, "
    "and kills the process tree if the turn has not ended after SECONDS "
    "(0: kill at once).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def cancel(
    session_id: str,
    run_id: str | None,
    wait: bool,
    timeout_s: float | None,
    grace_s: float,
    as_json: bool,
) -> None:
    """Cancel a queued or running run; the CLI and everything it started are killed
    (at once, or after --grace SECONDS if its turn has not ended by then)."""
    try:
        result = connect().cancel(
            session_id, run_id=run_id, wait=wait, timeout_s=timeout_s, grace_s=grace_s
        )
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
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
    info = connect().status()
    if as_json:
        click.echo(json.dumps(info.as_dict()))
        return
    console = Console(highlight=False)
    console.print(f"queue [bold]{info.queue}[/]: {info.queued} queued")
    console.print(f"workers: {len(info.workers)}")
    now = time.time()
    for worker_info in info.workers:
        console.print(
            f"  {worker_info.name}  {worker_info.state}  job={worker_info.current_job or '-'}"
        )
        for session_id, expires_at in sorted(worker_info.warm_sessions.items()):
            console.print(f"    warm {session_id}  {max(0, round(expires_at - now))}s left")
    console.print(f"running runs: {len(info.running)}")
    for run_id, session_id in info.running.items():
        console.print(f"  {run_id}  session={session_id}")


@main.command()
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON lines.")
def sessions(limit: int, as_json: bool) -> None:
    """List sessions, most recently active first."""
    infos = connect().sessions(limit=limit)
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
    """Everything known about a session, as JSON, with its open permission requests."""
    client = connect()
    try:
        info = client.session(session_id)
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if info is None:
        fail(f"no session {session_id!r}", ExitCode.RUN_FAILED)
    shown = info.as_dict()
    shown["open_requests"] = [request_summary(o) for o in client.open_requests(session_id)]
    click.echo(json.dumps(shown, indent=2))


@session.command("delete")
@click.argument("session_id")
@click.option("--force", is_flag=True, help="Cancel queued and running runs first.")
def session_delete(session_id: str, force: bool) -> None:
    """Delete a session's log, transcript and state."""
    try:
        removed = connect().delete_session(session_id, force=force)
    except (InvalidJobError, SessionBusy) as exc:  # a bad id is refused before any delete
        fail(str(exc), ExitCode.USAGE)
    click.echo(f"deleted session {session_id} ({removed} keys)")


main.add_command(reap)
main.add_command(worker)
main.add_command(acl)
main.add_command(approve)
main.add_command(deny)
main.add_command(requests_command)
main.add_command(serve)

if __name__ == "__main__":
    main()
