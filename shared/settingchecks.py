"""The value checks behind Settings' validators (shared/settings.py). Pure: each takes a
value read from the environment and returns it (normalised) or raises ValueError with
the message the user sees."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from shared.envnames import ENV_PREFIX
from shared.jobs import LIMIT_KEY_PATTERN

REDIS_SCHEMES = ("redis", "rediss", "unix")
ARCHIVE_SCHEMES = ("postgresql", "postgres")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def redis_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"redis_url must start with {', '.join(s + '://' for s in REDIS_SCHEMES)}; "
            f"got {scheme + '://' if scheme else 'no scheme'}"
        )


def archive_dsn(dsn: str) -> None:
    if dsn and urlsplit(dsn).scheme not in ARCHIVE_SCHEMES:
        raise ValueError("archive_dsn must be empty or start with postgresql:// or postgres://")


def limits(value: dict[str, int]) -> dict[str, int]:
    for key, most in value.items():
        if key != "*" and not re.fullmatch(LIMIT_KEY_PATTERN, key):
            raise ValueError(f"{key!r} is not a limit key (letters, digits, _ . : @ -)")
        if most < 1:
            raise ValueError(f"the limit of {key!r} must be at least 1")
    return value


def is_absolute(path: str) -> bool:
    return os.path.isabs(path) and "\x00" not in path


def cwd_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    for root in roots:
        if not is_absolute(root):
            raise ValueError(f"every cwd root must be an absolute path; got {root!r}")
    return tuple(os.path.normpath(root) for root in roots)


def passthrough_names(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if name.startswith(ENV_PREFIX):
            raise ValueError(f"{name} is a worker setting and is never passed to the CLI")
    return names
