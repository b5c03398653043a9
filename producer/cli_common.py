"""What every `claude-queue` command shares: settings, the client, errors and exit codes."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import redis

from producer.client import Client
from producer.errors import RedisUnavailable, redis_errors
from shared.exitcodes import ExitCode
from shared.settings import Settings, SettingsError


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


class Group(click.Group):
    """Turns a Redis outage in the middle of any command into one line and exit 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedisUnavailable as exc:
            redis_down(exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # below the client (reap)
            redis_down(RedisUnavailable.from_error(exc))
