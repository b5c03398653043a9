"""What every `claude-queue` command shares: settings, the client, errors and exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
import redis
from rich.console import Console

from producer.client import Client
from producer.errors import InvalidJobError, RedisUnavailable, redis_errors
from shared.envnames import SettingsError
from shared.exitcodes import ExitCode
from shared.runstore import SessionInfo
from shared.settings import Settings


def settings_or_exit() -> Settings:
    """Settings from CLAUDE_QUEUE_* variables; a bad one is a usage error (exit 2)."""
    try:
        return Settings.from_environment()
    except SettingsError as exc:
        click.echo(f"error: invalid configuration: {exc}", err=True)
        sys.exit(ExitCode.USAGE)


def redis_down(exc: RedisUnavailable) -> NoReturn:
    """One line, no traceback, exit 3: Redis did not answer."""
    click.echo(f"error: {exc}. Set CLAUDE_QUEUE_REDIS_URL or start Redis.", err=True)
    sys.exit(ExitCode.REDIS_UNREACHABLE)


def fail(message: str, code: ExitCode) -> NoReturn:
    """One `error: ...` line on stderr, then exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def connect() -> Client:
    """A client that has already reached Redis (exit 3 if it cannot, 2 if refused)."""
    settings = settings_or_exit()
    client = Client(settings)
    try:
        with redis_errors(settings.redis_url_redacted):
            client.redis.ping()
    except RedisUnavailable as exc:
        redis_down(exc)
    except redis.RedisError as exc:  # e.g. a wrong password: configuration
        fail(f"Redis at {settings.redis_url_redacted} refused us: {exc}", ExitCode.USAGE)
    return client


def known_session(client: Client, session_id: str) -> SessionInfo:
    """The session's info; exit 2 for an id submit would refuse, 4 for an unknown one."""
    try:
        info = client.session(session_id)
    except InvalidJobError as exc:
        fail(str(exc), ExitCode.USAGE)
    if info is None:
        fail(f"no session {session_id!r}", ExitCode.NOT_FOUND)
    return info


class Group(click.Group):
    """Turns a Redis outage in the middle of any command into one line and exit 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedisUnavailable as exc:
            redis_down(exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # below the client (reap)
            redis_down(RedisUnavailable.from_error(exc))


# A pipe gets no wrapping: lines as long as this stay whole (grep, log shippers).
_PIPE_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): colour and live widgets on a terminal only.

    Not a terminal: no colour, no wrapping, no markup of ours can widen a line.
    rich itself honours NO_COLOR (and FORCE_COLOR, TERM=dumb) on a terminal.
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False, stderr=stderr)
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=True,
        width=_PIPE_WIDTH,
        color_system=None,
        no_color=True,
        emoji=False,
        force_terminal=False,
        force_interactive=False,
    )


def echo_json(value: object) -> None:
    """One JSON object on one line: the shape every --json output uses."""
    click.echo(json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str))
