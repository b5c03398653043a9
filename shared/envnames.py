"""Settings as environment variables: their names, the check for unknown ones, and
errors worded by variable name (values never shown). shared/settings.py uses these."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping

from shared.errors import ClaudeQueueError
from shared.jobs import describe_validation_error

ENV_PREFIX = "CLAUDE_QUEUE_"
# CLAUDE_QUEUE_* names that are not settings: the markers a worker gives each CLI
# process (so a `claude-queue` command run by a tool still starts), and the test db.
NOT_SETTINGS = frozenset(
    {"CLAUDE_QUEUE_RUN_ID", "CLAUDE_QUEUE_SCOPE", "CLAUDE_QUEUE_TEST_REDIS_URL"}
)


class SettingsError(ClaudeQueueError, ValueError):
    """The configuration cannot be used; the message names what to fix."""


def unknown_names_check(environ: Mapping[str, str], known_names: Collection[str]) -> None:
    """Raise SettingsError for a CLAUDE_QUEUE_* variable that is not in known_names."""
    known = set(known_names)
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and name not in known and name not in NOT_SETTINGS
    )
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name} is not a claude-queue setting{hint}")
    raise SettingsError("; ".join(problems))


def describe_settings_error(exc: Exception) -> str:
    """One line per bad setting, named as its environment variable; values never shown."""
    return describe_validation_error(exc, name=_variable_name)


def describe_source_error(exc: Exception) -> str:
    """A list or object setting whose value is not JSON, named as its variable."""
    match = re.search(r'field "(\w+)"', str(exc))
    name = f"{ENV_PREFIX}{match.group(1).upper()}" if match else f"a {ENV_PREFIX}* variable"
    return f"{name}: not valid JSON (list and object settings are JSON)"


def _variable_name(loc: list[str]) -> str:
    return ".".join([ENV_PREFIX + loc[0].upper(), *loc[1:]]) if loc else "settings"
