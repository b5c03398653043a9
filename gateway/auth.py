"""Who is calling: API keys and session tokens, as FastAPI dependencies.

Every route declares what it needs: `Depends(auth.require_scope(Scope.READ))` on a
session route (an API key, or a token for that session with that scope), or
`Depends(auth.require_api_key)` elsewhere. With no API keys configured every
request is allowed (the server refuses to listen beyond loopback then, unless
told `--insecure`), and credentials are not looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import FORBIDDEN, UNAUTHORIZED, GatewayError
from gateway.tokens import Scope, TokenClaims, TokenError, looks_like_token, verify
from shared.settings import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (may do everything) or a session token (one session, its scopes).",
)
_query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="A session token, for clients that cannot set headers (EventSource).",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
QueryToken = Annotated[str | None, Depends(_query_token)]


class Kind(StrEnum):
    API_KEY = "api-key"
    TOKEN = "token"  # noqa: S105 (a kind of principal, not a secret)
    OPEN = "unauthenticated"  # no API keys configured: everyone may do everything


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    claims: TokenClaims | None = None

    @property
    def decided_by(self) -> str:
        """How a permission decision names who answered: api-key, token:<id>, unauthenticated."""
        if self.claims is not None:
            return f"token:{self.claims.token_id}"
        return self.kind.value


class Auth:
    """Checks credentials against the settings; builds the routes' dependencies."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._key_digests = tuple(
            hashlib.sha256(key.get_secret_value().encode()).digest() for key in settings.api_keys
        )
        secret = settings.token_secret
        self.token_secret = None if secret is None else secret.get_secret_value().encode()
        self._clock = clock

    @property
    def open(self) -> bool:
        """No API keys configured: every request is allowed."""
        return not self._key_digests

    def require_scope(self, scope: Scope) -> Callable[..., Awaitable[Principal]]:
        """A dependency for a session route: an API key, or a token for it with `scope`."""

        async def dependency(session_id: str, bearer: Bearer, query_token: QueryToken) -> Principal:
            principal = self._identify(bearer, query_token)
            claims = principal.claims
            if claims is not None:
                if claims.session_id != session_id:
                    raise _forbidden("this token is for another session")
                if scope not in claims.scopes:
                    raise _forbidden(f"this token lacks the {scope.value!r} scope")
            return principal

        return dependency

    async def require_api_key(self, bearer: Bearer, query_token: QueryToken) -> Principal:
        """A dependency for routes beyond one session: only an API key will do."""
        principal = self._identify(bearer, query_token)
        if principal.claims is not None:
            raise _forbidden("a session token is only valid on its session's routes")
        return principal

    def _identify(
        self, bearer: HTTPAuthorizationCredentials | None, query_token: str | None
    ) -> Principal:
        if self.open:
            return Principal(Kind.OPEN)
        if bearer is not None and bearer.scheme.lower() == "bearer":
            presented = bearer.credentials
        elif query_token:
            presented = query_token
        else:
            raise _unauthorized("missing credentials: send Authorization: Bearer <key or token>")
        if self._is_api_key(presented):
            return Principal(Kind.API_KEY)
        if looks_like_token(presented) and self.token_secret is not None:
            try:
                claims = verify(self.token_secret, presented, now=self._clock())
            except TokenError as exc:
                raise _unauthorized(str(exc), invalid_token=True) from None
            return Principal(Kind.TOKEN, claims)
        raise _unauthorized("invalid credentials", invalid_token=True)

    def _is_api_key(self, presented: str) -> bool:
        """Constant time: every key is compared, as digests (no length is revealed)."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = False
        for key_digest in self._key_digests:
            found |= hmac.compare_digest(digest, key_digest)
        return found


def _unauthorized(message: str, *, invalid_token: bool = False) -> GatewayError:
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return GatewayError(401, UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def _forbidden(message: str) -> GatewayError:
    return GatewayError(403, FORBIDDEN, message)
