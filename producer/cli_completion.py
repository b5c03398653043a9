"""Shell completion: `claude-queue completion bash|zsh|fish` prints the script, and
session id arguments complete from the sessions Redis knows of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from click.shell_completion import CompletionItem, get_completion_class

from shared.ids import is_session_id

_Command = TypeVar("_Command", bound=Callable[..., Any])

# Ids offered at most (the most recently active first).
_COMPLETION_LIMIT = 500
_SHELLS = ("bash", "zsh", "fish")


def complete_session_id(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Session ids starting with what was typed; nothing (never an error) without Redis."""
    from producer.client import Client
    from shared.envnames import SettingsError
    from shared.settings import Settings

    try:
        settings = Settings.from_environment()
    except SettingsError:
        return []
    try:
        with Client(settings) as client:
            index = client.keys.sessions
            members = cast(list[Any], client.redis.zrevrange(index, 0, _COMPLETION_LIMIT - 1))
    except Exception:  # any failure: a completion must never print a traceback
        return []
    found = (m.decode(errors="replace") if isinstance(m, bytes) else str(m) for m in members)
    # Only ids submit would accept reach the shell: the index is Redis data, untrusted.
    return [CompletionItem(s) for s in found if is_session_id(s) and s.startswith(incomplete)]


def session_argument(name: str = "session_id") -> Callable[[_Command], _Command]:
    """A SESSION_ID argument that completes from Redis."""
    return click.argument(name, shell_complete=complete_session_id)


@click.command()
@click.argument("shell", type=click.Choice(_SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL (bash, zsh or fish).

    \b
    bash: eval "$(claude-queue completion bash)"        (in ~/.bashrc)
    zsh:  eval "$(claude-queue completion zsh)"         (in ~/.zshrc)
    fish: claude-queue completion fish > ~/.config/fish/completions/claude-queue.fish

    Commands and options complete, and session ids complete from Redis
    (with the CLAUDE_QUEUE_* settings of the shell).
    """
    from producer.cli import main

    shell_class = get_completion_class(shell)
    if shell_class is None:  # click knows all three; a guard, not a path
        raise click.UsageError(f"no completion for {shell}")
    # The installed command's name: the script calls it back with _CLAUDE_QUEUE_COMPLETE set.
    script = shell_class(main, {}, "claude-queue", "_CLAUDE_QUEUE_COMPLETE").source()
    click.echo(script)
