"""Validators for ids and paths read back from Redis: anyone who can write Redis can
write them, so they are checked again before they reach a path, a glob, a key
pattern or argv.
"""

from __future__ import annotations

import os
import re

from shared.jobs import SESSION_ID_PATTERN

# The CLI names conversations with uuid4, printed in canonical lowercase form. Any
# version is accepted (captured fixtures use hand-made ids), never another shape.
CLAUDE_SESSION_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# shared.jobs.new_run_id: uuid4().hex.
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"
# Permission request ids come from the CLI (uuid4 today): a bounded token, no `:` (the
# store keys a request's decision as `<request_id>:decision`), nothing a glob reads.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

_CLAUDE_SESSION_ID = re.compile(CLAUDE_SESSION_ID_PATTERN)
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
# Redis glob metacharacters (SCAN MATCH, KEYS, PSUBSCRIBE).
_REDIS_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _full(pattern: re.Pattern[str], value: object) -> bool:
    # fullmatch, not match: `$` alone would accept a trailing newline.
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_claude_session_id(value: object) -> bool:
    """True for a conversation id in canonical lowercase 8-4-4-4-12 UUID form."""
    return _full(_CLAUDE_SESSION_ID, value)


def is_session_id(value: object) -> bool:
    """True for a session id that `submit` would accept (shared.jobs.SESSION_ID_PATTERN)."""
    return _full(_SESSION_ID, value)


def is_run_id(value: object) -> bool:
    """True for a run id as `new_run_id` makes them (32 lowercase hex digits)."""
    return _full(_RUN_ID, value)


def is_request_id(value: object) -> bool:
    """True for a permission request id the store will key a record by."""
    return _full(_REQUEST_ID, value)


def is_absolute_cwd(value: object) -> bool:
    """True for an absolute path with no NUL: what the CLI may be started in."""
    return isinstance(value, str) and os.path.isabs(value) and "\x00" not in value


def escape_redis_glob(text: str) -> str:
    """`text` as a Redis glob pattern that matches exactly itself."""
    return _REDIS_GLOB_SPECIAL.sub(r"\\\1", text)
