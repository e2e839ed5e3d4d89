"""Errors with a stable machine code, and the handlers that render them as the README's API
section says: `{"detail": {"code": "...", "message": "..."}}`."""

from __future__ import annotations

import email.message
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from botfleet.manager.lifecycle import IllegalTransition


class BotfleetError(Exception):
    """A refusal the caller can act on. Services raise it; the API renders it."""

    status_code = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


class Unauthorized(BotfleetError):
    status_code = 401


class Forbidden(BotfleetError):
    status_code = 403


class NotFound(BotfleetError):
    status_code = 404


class Conflict(BotfleetError):
    status_code = 409


class Invalid(BotfleetError):
    status_code = 422


class TooMany(BotfleetError):
    status_code = 429


class Unavailable(BotfleetError):
    status_code = 503


class NotImplementedByBackend(BotfleetError):
    status_code = 501


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable machine-readable code, e.g. `concurrency_limit`.")
    message: str


class ErrorOut(BaseModel):
    """The body of every error answer."""

    detail: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not UTF-8)",
    401: "No or bad credentials",
    403: "Valid credentials for another resource, or a read-only key writing",
    404: "Unknown, or another user's",
    409: "Illegal in the current state, or a duplicate",
    413: "Body too large",
    415: "The body is not sent as JSON (`Content-Type: application/json`)",
    422: "Invalid input",
    429: "Over the user's concurrency limit, or over a rate limit (with Retry-After)",
    501: "Not supported by this backend",
    503: "A dependency (database, engine) is unreachable or saturated (with Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all shaped as `ErrorOut`.

    A route that can answer 422 takes input, so it also lists 415: the handler below answers
    415 to any JSON body sent as another media type, on every route.
    """
    listed = (*codes, 415) if 422 in codes and 415 not in codes else codes
    return {c: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[c]} for c in sorted(listed)}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"code": code, "message": message, **extra}}


#: Seconds a client is told to wait when the database is saturated.
BUSY_RETRY_AFTER_S = 1


def database_busy() -> JSONResponse:
    """503 `database_busy`: every place or pooled connection stayed taken for the allowed wait
    (manager/http/admission.py, BOTFLEET_DB_POOL_TIMEOUT_S). Retrying shortly is the right move."""
    return JSONResponse(
        error_body("database_busy", "the database is saturated; retry shortly"),
        503,
        headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
    )


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


JSON_BODY_HINT = "send the body as JSON with Content-Type: application/json"


def _is_json(content_type: str | None) -> bool:
    """`application/json` or any `application/*+json`, as FastAPI itself reads bodies."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _unreadable_body(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """The refusals FastAPI words for itself, said for people: a body that is not JSON (where
    and why), a body sent as another media type (curl -d sends a form), or no body at all."""
    errors = exc.errors()
    if not errors:
        return None
    first = errors[0]
    if first.get("type") == "json_invalid" and isinstance(exc.body, str):
        pos = first["loc"][-1] if isinstance(first["loc"][-1], int) else 0
        where = json.JSONDecodeError("", exc.body, pos)  # computes line and column from pos
        reason = (first.get("ctx") or {}).get("error", "not valid JSON")
        return JSONResponse(
            error_body(
                "invalid_json",
                f"invalid JSON at line {where.lineno}, column {where.colno}: {reason}",
                line=where.lineno,
                column=where.colno,
            ),
            422,
        )
    if tuple(first.get("loc", ())) != ("body",):
        return None
    content_type = request.headers.get("content-type")
    if isinstance(exc.body, bytes) and exc.body and not _is_json(content_type):
        sent = f"it came as {content_type}" if content_type else "it came without a Content-Type"
        return JSONResponse(error_body("unsupported_media_type", f"{JSON_BODY_HINT}; {sent}"), 415)
    if first.get("type") == "missing":
        return JSONResponse(
            error_body("invalid_input", f"body: the request has none; {JSON_BODY_HINT}"),
            422,
        )
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BotfleetError)
    async def _botfleet(_: Request, exc: BotfleetError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.extra), exc.status_code, headers=headers
        )

    @app.exception_handler(IllegalTransition)
    async def _illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse(
            error_body("illegal_transition", str(exc), status=exc.current, requested=exc.target),
            409,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = _unreadable_body(request, exc)
        if refused is not None:
            return refused
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid input"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return JSONResponse(
            error_body("invalid_input", f"{where}: {first['msg']}", errors=errors), 422
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if not exc.connection_invalidated and not isinstance(exc, OperationalError):
            raise exc
        return JSONResponse(
            error_body("database_unavailable", "the database is unreachable; retry shortly"),
            503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        # No pooled connection came free within BOTFLEET_DB_POOL_TIMEOUT_S: saturated, not
        # broken (a bare 500 would say the opposite).
        return database_busy()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just one route's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        if isinstance(exc.detail, dict) and "code" in exc.detail:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)
