"""`claude-queue`: the command line for producers, operators and workers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

import click

from producer.cancelling import CancelOutcome
from producer.cli_admin import acl, reap, worker
from producer.cli_approvals import approve, deny, requests_command
from producer.cli_archive import archive, archiver
from producer.cli_common import Group, connect, echo_json, fail, known_session, make_console
from producer.cli_completion import completion, session_argument
from producer.cli_cron import cron
from producer.cli_doctor import doctor
from producer.cli_follow import SECOND_INTERRUPT_S, Follower
from producer.cli_scheduling import parse_when, scheduling_options
from producer.cli_serve import serve
from producer.cli_sessions import session, sessions, status
from producer.errors import InvalidJobError, SessionBusy
from producer.render import Verbosity
from shared.control import MAX_GRACE_S
from shared.events import Envelope, RunStatus
from shared.exitcodes import ExitCode
from shared.jobs import OnBusy


def _verbosity(verbose: bool, quiet: bool) -> Verbosity:
    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet exclude each other")
    return Verbosity.VERBOSE if verbose else Verbosity.QUIET if quiet else Verbosity.NORMAL


def _metadata(metadata_json: str | None, pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """--metadata JSON and --meta KEY=VALUE, merged (--meta wins); None if neither."""
    if metadata_json is None and not pairs:
        return None
    merged: dict[str, Any] = {}
    if metadata_json is not None:
        try:
            parsed = json.loads(metadata_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--metadata") from None
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--metadata")
        merged.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        merged[key] = value
    return merged


def _verbosity_options(command: Callable[..., Any]) -> Callable[..., Any]:
    # Hidden: how long a second Ctrl-C offers to cancel (tests on a busy machine widen it).
    command = click.option(
        "--second-interrupt-s",
        type=click.FloatRange(0.0, 3600.0),
        default=SECOND_INTERRUPT_S,
        hidden=True,
    )(command)
    command = click.option(
        "-q", "--quiet", is_flag=True, help="Print only the final answer (errors on stderr)."
    )(command)
    return click.option(
        "-v", "--verbose", is_flag=True, help="Show every event in full: tool inputs and results."
    )(command)


def _following(follower: Follower, envelopes: Iterable[Envelope]) -> RunStatus | None:
    """Follow; Ctrl-C (also at an inline prompt) ends in Follower.interrupted: exit 130."""
    try:
        return follower.follow(envelopes)
    except (KeyboardInterrupt, click.Abort):
        follower.interrupted()


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

    \b
    Exit codes: 0 ok, 1 the followed run did not succeed, 2 bad usage or
    configuration, 3 Redis unreachable, 4 no such session, 130 Ctrl-C while
    following (the run goes on). --json prints one JSON object per line.
    Not a terminal (or NO_COLOR set): no colour; in a pipe, no wrapping.
    """


@main.command()
@click.argument("prompt")
@click.option("--session", "session_id", required=True, help="Session id (letters, digits, _ . -).")
@click.option("--cwd", help="Absolute working directory for the CLI on the worker.")
@click.option("--model", help="Model name passed to the CLI.")
@click.option("--context", "context_json", help="JSON object prepended to the prompt.")
@click.option("--metadata", "metadata_json", help="JSON object kept with the run (queued event).")
@click.option(
    "--meta", "meta_pairs", multiple=True, metavar="KEY=VALUE", help="One metadata entry."
)
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
@scheduling_options
@click.option("--follow", is_flag=True, help="Stream the run's events until it finishes.")
@_verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print envelopes as JSON lines.")
def submit(
    prompt: str,
    session_id: str,
    cwd: str | None,
    model: str | None,
    context_json: str | None,
    metadata_json: str | None,
    meta_pairs: tuple[str, ...],
    profile: str | None,
    partial: bool,
    max_turns: int | None,
    timeout_s: float | None,
    new_conversation: bool,
    on_busy: str,
    resume_policy: str,
    run_at: str | None,
    delay_s: float | None,
    priority: str,
    limit_key: str | None,
    retry_lost: int,
    retry_on: tuple[str, ...],
    follow: bool,
    verbose: bool,
    quiet: bool,
    second_interrupt_s: float,
    as_json: bool,
) -> None:
    """Queue PROMPT for a session ("-" reads the prompt from stdin).

    A prompt that starts with "-" goes after "--": claude-queue submit --session s -- "--x".
    With --follow, exits 0 if the run succeeded and 1 otherwise; Ctrl-C stops
    following (the run goes on), prints the command that cancels it, and exits 130.
    On a terminal (and without --json), --follow asks about each permission request
    inline: Allow? [y/N] (an empty answer denies).
    """
    verbosity = _verbosity(verbose, quiet)
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
        "metadata": _metadata(metadata_json, meta_pairs),
        "profile": profile,
        "max_turns": max_turns,
        "timeout_s": timeout_s,
        "run_at": parse_when(run_at),
        "delay_s": delay_s,
        "limit_key": limit_key,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if partial:
        fields["include_partial_messages"] = True
    fields["new_conversation"] = new_conversation
    fields["resume_policy"] = resume_policy
    fields["priority"] = priority
    fields["retry_lost"] = retry_lost
    fields["retry_on"] = retry_on
    client = connect()
    try:
        handle = client.submit(on_busy=cast(OnBusy, on_busy), **fields)
    except (InvalidJobError, SessionBusy) as exc:
        fail(str(exc), ExitCode.USAGE)
    if not follow:
        if as_json:
            echo_json(
                {"session_id": handle.session_id, "run_id": handle.run_id, "seq": handle.queued_seq}
            )
        else:
            click.echo(
                f"queued run {handle.run_id} in session {handle.session_id} "
                f"(seq {handle.queued_seq})"
            )
        return
    follower = Follower(
        client,
        as_json=as_json,
        verbosity=verbosity,
        session_id=handle.session_id,
        run_id=handle.run_id,
        second_interrupt_s=second_interrupt_s,
    )
    status = _following(follower, handle.stream())
    sys.exit(ExitCode.OK if status is RunStatus.SUCCEEDED else ExitCode.RUN_FAILED)


@main.command()
@session_argument()
@click.option("--after", type=int, default=0, show_default=True, help="Replay after this seq.")
@click.option("--no-follow", is_flag=True, help="Print the log and exit; do not wait.")
@click.option("--until-finished", is_flag=True, help="Stop at the next finished event.")
@click.option("--wait", is_flag=True, help="Wait for a session that has logged nothing yet.")
@_verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print envelopes as JSON lines.")
def tail(
    session_id: str,
    after: int,
    no_follow: bool,
    until_finished: bool,
    wait: bool,
    verbose: bool,
    quiet: bool,
    second_interrupt_s: float,
    as_json: bool,
) -> None:
    """Replay a session's events, then follow new ones live (Ctrl-C to stop: exit 130).

    A session that has logged nothing is an error (exit 4) unless --wait is given,
    which follows until its first event comes. With --until-finished, exits 0 if
    that run succeeded and 1 otherwise. On a terminal (and without --json) each
    open permission request is asked about inline: Allow? [y/N].
    """
    verbosity = _verbosity(verbose, quiet)
    if wait and no_follow:
        raise click.UsageError("--wait follows the session; it cannot go with --no-follow")
    client = connect()
    try:
        info = client.session(session_id)
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if info is None or info.last_seq == 0:
        if not wait:
            fail(
                f"no session {session_id!r} (nothing logged; --wait waits for its first event)",
                ExitCode.NOT_FOUND,
            )
        make_console(stderr=True).print(
            f"waiting for session {session_id} to log its first event (Ctrl-C to stop)",
            markup=False,
            style="dim",
        )
    stream = client.stream(
        session_id, after=after, follow=not no_follow, stop_at_finish=until_finished
    )
    follower = Follower(
        client,
        as_json=as_json,
        verbosity=verbosity,
        session_id=session_id,
        second_interrupt_s=second_interrupt_s,
    )
    status = _following(follower, stream)
    if until_finished and status is not RunStatus.SUCCEEDED:
        sys.exit(ExitCode.RUN_FAILED)


@main.command()
@session_argument()
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
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def cancel(
    session_id: str,
    run_id: str | None,
    wait: bool,
    timeout_s: float | None,
    grace_s: float,
    as_json: bool,
) -> None:
    """Cancel a queued or running run; the CLI and everything it started are killed
    (at once, or after --grace SECONDS if its turn has not ended by then).

    Exits 4 if there is no such session; 0 also when it had nothing to cancel.
    """
    client = connect()
    known_session(client, session_id)
    try:
        result = client.cancel(
            session_id, run_id=run_id, wait=wait, timeout_s=timeout_s, grace_s=grace_s
        )
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(f"{result.outcome.value} (session {session_id}, run {result.run_id or '-'})")
    unreachable = result.outcome is CancelOutcome.OWNER_UNREACHABLE
    sys.exit(ExitCode.RUN_FAILED if unreachable else ExitCode.OK)


main.add_command(status)
main.add_command(sessions)
main.add_command(session)
main.add_command(reap)
main.add_command(worker)
main.add_command(acl)
main.add_command(approve)
main.add_command(deny)
main.add_command(requests_command)
main.add_command(serve)
main.add_command(completion)
main.add_command(doctor)
main.add_command(archiver)
main.add_command(archive)
main.add_command(cron)

if __name__ == "__main__":
    main()
