"""One error shape for every failure: `{"error": {"code", "message", "fields"?}}`.

Every error the gateway answers with goes through the handlers installed here:
its own (GatewayError), request validation, unknown routes and methods, the
producer's exceptions, and anything unexpected (500, logged).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from producer.errors import InvalidJobError, RedisUnavailable, SessionBusy

log = structlog.get_logger(__name__)

# The codes the gateway answers with (README: HTTP gateway, Errors).
INVALID_REQUEST = "invalid_request"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
SESSION_BUSY = "session_busy"
REDIS_UNAVAILABLE = "redis_unavailable"
TOKENS_DISABLED = "tokens_disabled"
INTERNAL = "internal"

_CODES_BY_STATUS = {
    400: INVALID_REQUEST,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    409: SESSION_BUSY,
    422: INVALID_REQUEST,
    503: REDIS_UNAVAILABLE,
}
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
_PREFIXES = ("invalid job: ", "invalid answer: ")
_FIELD_PART = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.+)$", re.DOTALL)


class GatewayError(Exception):
    """An error answer: HTTP status, a stable code, a message, and per-field messages."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers) if headers else None


def error_body(code: str, message: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if fields:
        detail["fields"] = dict(fields)
    return {"error": detail}


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.fields),
        status_code=error.status,
        headers=error.headers,
    )


def invalid(message: str, fields: Mapping[str, str] | None = None) -> GatewayError:
    """A 422 naming the bad fields."""
    return GatewayError(422, INVALID_REQUEST, message, fields=fields)


def fields_of_errors(errors: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Pydantic/FastAPI errors as {field: message}; the location's source is left out."""
    fields: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _SOURCES:
            source, loc = loc[0], loc[1:]
            if source == "body" and error.get("type") == "json_invalid":
                loc = []  # the position in the document, not a field
        name = ".".join(loc) or "body"
        message = str(error.get("msg", "invalid"))
        fields[name] = f"{fields[name]}; {message}" if name in fields else message
    return fields


def fields_of_message(message: str) -> dict[str, str]:
    """The `field: message` parts of an InvalidJobError (see describe_validation_error)."""
    text = message
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    fields: dict[str, str] = {}
    for part in text.split("; "):
        match = _FIELD_PART.match(part)
        if match is None:
            return {}  # not the usual form: the message alone says it
        fields[match.group(1)] = match.group(2)
    return fields


async def _gateway_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = fields_of_errors(exc.errors())
    summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
    return error_response(invalid(f"invalid request: {summary}", fields))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(GatewayError(exc.status_code, code, str(exc.detail), headers=headers))


async def _invalid_job(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(invalid(str(exc), fields_of_message(str(exc))))


async def _busy(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(GatewayError(409, SESSION_BUSY, str(exc)))


async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("gateway_redis_unavailable", error=str(exc))
    return error_response(GatewayError(503, REDIS_UNAVAILABLE, str(exc)))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("gateway_internal_error", path=request.url.path, exc_info=exc)
    return error_response(GatewayError(500, INTERNAL, "internal error; see the gateway's log"))


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one shape."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InvalidJobError, _invalid_job)
    app.add_exception_handler(SessionBusy, _busy)
    app.add_exception_handler(RedisUnavailable, _redis_down)
    app.add_exception_handler(Exception, _unexpected)
