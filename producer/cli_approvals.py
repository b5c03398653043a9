"""Permission requests on the command line: `approve`, `deny`, `requests`, and the
inline `Allow? [y/N]` of a followed run on a terminal."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click
from pydantic import ValidationError

from producer.approvals import (
    AnswerOutcome,
    AnswerResult,
    OpenRequest,
    expires_in_s,
    input_preview,
)
from producer.cli_common import connect, echo_json, fail, known_session
from producer.client import Client
from producer.errors import InvalidJobError
from shared.control import MAX_DECIDED_BY_CHARS
from shared.events import Envelope, EventType, PermissionRequestData
from shared.exitcodes import ExitCode

ANONYMOUS = "cli"


def default_decider() -> str:
    """Who answers when nobody says: the OS user name, else `cli`."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return ANONYMOUS
    return name[:MAX_DECIDED_BY_CHARS] or ANONYMOUS


def outcome_text(result: AnswerResult, *, allow: bool) -> str:
    """One line saying what became of an answer."""
    request = f"request {result.request_id}"
    match result.outcome:
        case AnswerOutcome.DELIVERED:
            return f"{'allowed' if allow else 'denied'} {request} (session {result.session_id})"
        case AnswerOutcome.ALREADY_DECIDED:
            return f"{request} was already decided (answered before, or it timed out)"
        case AnswerOutcome.UNKNOWN_REQUEST:
            return f"the running run of session {result.session_id} has no {request}"
        case AnswerOutcome.RUN_NOT_RUNNING:
            return f"session {result.session_id} has no running run to answer {request} of"


def request_summary(open_request: OpenRequest, now: float | None = None) -> dict[str, Any]:
    """A short view of an open request: what `session show` lists."""
    request = open_request.request
    return {
        "request_id": request.request_id,
        "run_id": open_request.run_id,
        "tool_name": request.tool_name,
        "description": request.description,
        "input_preview": input_preview(request.input),
        "expires_in_s": expires_in_s(request.expires_at, now),
    }


def _answer(
    session_id: str,
    request_id: str,
    *,
    allow: bool,
    message: str | None,
    decided_by: str | None,
    as_json: bool,
) -> None:
    client = connect()
    known_session(client, session_id)
    try:
        result = client.respond(
            session_id,
            request_id,
            allow=allow,
            message=message,
            decided_by=decided_by or default_decider(),
        )
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    text = outcome_text(result, allow=allow)
    if as_json:
        echo_json(result.as_dict())
    if not result.delivered:
        fail(text, ExitCode.RUN_FAILED)
    if not as_json:
        click.echo(text)


_AS_HELP = "Who answers, as recorded with the decision (default: your user name)."
_JSON_HELP = "Print the outcome as JSON."


@click.command()
@click.argument("session_id")
@click.argument("request_id")
@click.option("--as", "decided_by", metavar="NAME", help=_AS_HELP)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def approve(session_id: str, request_id: str, decided_by: str | None, as_json: bool) -> None:
    """Allow a permission request of the session's running run.

    Exits 0 if the answer reached the run, 1 if the request was already decided
    (by someone else, or by its timeout), is unknown, or its run has ended;
    4 if there is no such session.
    """
    _answer(
        session_id, request_id, allow=True, message=None, decided_by=decided_by, as_json=as_json
    )


@click.command()
@click.argument("session_id")
@click.argument("request_id")
@click.option("--message", help="Why, as told to Claude (default: 'denied by NAME').")
@click.option("--as", "decided_by", metavar="NAME", help=_AS_HELP)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def deny(
    session_id: str, request_id: str, message: str | None, decided_by: str | None, as_json: bool
) -> None:
    """Deny a permission request of the session's running run.

    Exits like `approve`.
    """
    _answer(
        session_id,
        request_id,
        allow=False,
        message=message,
        decided_by=decided_by,
        as_json=as_json,
    )


@click.command("requests")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Print each request as a JSON line.")
def requests_command(session_id: str, as_json: bool) -> None:
    """List the open permission requests of a session's running run.

    Answer them with `claude-queue approve` or `claude-queue deny`.
    """
    client = connect()
    known_session(client, session_id)
    try:
        found = client.open_requests(session_id)
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if as_json:
        for open_request in found:
            echo_json(open_request.as_dict())
        return
    if not found:
        click.echo(f"no open permission requests in session {session_id}")
    for open_request in found:
        view = request_summary(open_request)
        click.echo(
            f"{view['request_id']}  {view['tool_name']}  {view['input_preview']}  "
            f"expires in {view['expires_in_s']} s"
        )


def is_interactive(as_json: bool) -> bool:
    """Ask inline only when a person sits at a terminal: stdin and stdout, no --json."""
    return not as_json and sys.stdin.isatty() and sys.stdout.isatty()


class InlineAnswers:
    """Asks `Allow? [y/N]` for each permission request of a followed stream that is open."""

    def __init__(self, client: Client, decided_by: str | None = None) -> None:
        self.client = client
        self.decided_by = decided_by or default_decider()

    def offer(self, envelope: Envelope) -> None:
        """Ask about this event if it is a permission request nobody has decided yet."""
        if envelope.type is not EventType.PERMISSION_REQUEST:
            return
        try:
            data = envelope.typed_data()
        except ValidationError:
            return  # a broken request: it was shown plainly, nothing to answer
        if not isinstance(data, PermissionRequestData) or not self._is_open(envelope, data):
            return
        allow = click.confirm("Allow?", default=False)
        try:
            result = self.client.respond(
                envelope.session_id,
                data.request_id,
                allow=allow,
                decided_by=self.decided_by,
                run_id=envelope.run_id,
            )
        except InvalidJobError as exc:  # ids no worker of ours writes: say so, keep following
            click.echo(f"cannot answer: {exc}", err=True)
            return
        if result.outcome is AnswerOutcome.ALREADY_DECIDED:
            click.echo(f"too late: {outcome_text(result, allow=allow)}")
        else:
            click.echo(outcome_text(result, allow=allow))

    def _is_open(self, envelope: Envelope, data: PermissionRequestData) -> bool:
        """Replayed or already timed-out requests are shown, never asked about."""
        try:
            found = self.client.open_requests(envelope.session_id)
        except InvalidJobError:
            return False
        return any(
            o.run_id == envelope.run_id and o.request.request_id == data.request_id for o in found
        )
