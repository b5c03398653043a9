"""Connection addresses: Sentinel `host:port` pairs parsed, and URLs with every
credential hidden before they reach a log, an error or a status page."""

from __future__ import annotations

import re

_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[^=&#;]*(?:pass|token|secret|auth|key|cred)[^=&#;]*)=)[^&#;]*"
)
_HIDDEN = r"\1***"


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def sentinel_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as a pair; ValueError naming what is wrong."""
    host, colon, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    else:
        valid_host = bool(_HOST.fullmatch(host))
    if not colon or not valid_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a sentinel address must be host:port; got {address!r}")
    return host, int(port)


def redact_url(url: str) -> str:
    """Hide every credential in a URL: user info and secret-looking query values.

    Everything between `://` and the last `@` is taken as user info, so an
    ambiguous URL (unescaped `/ ? #` in a password) is over-redacted, never leaked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_SECRET.sub(_HIDDEN, url)
    if "@" in rest:
        userinfo, _, hostpart = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        # A lone user part may be a token (redis://TOKEN@host): hide it whole.
        rest = f"{user}:***@{hostpart}" if colon else f"***@{hostpart}"
    return f"{scheme}://{_QUERY_SECRET.sub(_HIDDEN, rest)}"
