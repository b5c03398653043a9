"""Per-session tokens: mint and verify. Pure (the clock is an argument).

A token is `cq1.<payload>.<signature>`, both parts unpadded URL-safe base64:
the payload is compact JSON `{"sid": session id, "scp": [scopes], "exp": unix
seconds, "jti": token id}`, the signature HMAC-SHA256 over `cq1.<payload>` with a
key derived from the configured secret (so the secret itself signs nothing else).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.ids import is_session_id

PREFIX = "cq1"
_KEY_LABEL = b"claude-queue gateway session token v1"
_TOKEN_ID_BYTES = 8


class Scope(StrEnum):
    """What a session token lets its bearer do on its one session."""

    READ = "read"  # stream events, read the session
    SUBMIT = "submit"  # start runs
    CANCEL = "cancel"  # cancel runs
    APPROVE = "approve"  # answer permission requests


class TokenError(ValueError):
    """The token cannot be used; `expired` says whether it was genuine but too old."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class TokenClaims:
    session_id: str
    scopes: frozenset[Scope]
    expires_at: int
    token_id: str


def looks_like_token(text: str) -> bool:
    """True if `text` has a token's shape (it may still be forged or expired)."""
    return text.startswith(PREFIX + ".") and text.count(".") == 2


def mint(
    secret: bytes, session_id: str, scopes: frozenset[Scope], *, now: float, ttl_s: float
) -> tuple[str, TokenClaims]:
    """A signed token for one session, and what it says."""
    if not is_session_id(session_id):
        raise ValueError(f"{session_id!r} is not a session id")
    if not scopes:
        raise ValueError("a token needs at least one scope")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    claims = TokenClaims(
        session_id=session_id,
        scopes=frozenset(scopes),
        expires_at=int(now + ttl_s),
        token_id=secrets.token_hex(_TOKEN_ID_BYTES),
    )
    payload = {
        "sid": claims.session_id,
        "scp": sorted(scope.value for scope in claims.scopes),
        "exp": claims.expires_at,
        "jti": claims.token_id,
    }
    body = f"{PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{body}.{_b64(_sign(secret, body))}", claims


def verify(secret: bytes, token: str, *, now: float) -> TokenClaims:
    """The claims of a genuine, unexpired token; TokenError otherwise."""
    if not looks_like_token(token):
        raise TokenError("malformed token")
    body, _, signature = token.rpartition(".")
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenError("malformed token") from None
    if _b64(given) != signature:  # one spelling per token: no variant passes
        raise TokenError("malformed token")
    if not hmac.compare_digest(given, _sign(secret, body)):
        raise TokenError("invalid token signature")
    claims = _claims(body.partition(".")[2])  # signed by us: only a bug makes this fail
    if now >= claims.expires_at:
        raise TokenError("token expired", expired=True)
    return claims


def _claims(encoded: str) -> TokenClaims:
    try:
        payload: Any = json.loads(_unb64(encoded))
        return TokenClaims(
            session_id=str(payload["sid"]),
            scopes=frozenset(Scope(s) for s in payload["scp"]),
            expires_at=int(payload["exp"]),
            token_id=str(payload["jti"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("malformed token payload") from exc


def _sign(secret: bytes, body: str) -> bytes:
    key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text) or not text.isascii():
        raise ValueError("not unpadded URL-safe base64")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
