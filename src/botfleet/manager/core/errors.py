"""Errors with a stable machine code, and the handlers that render them as docs/how-to/api.md
says: `{"detail": {"code": "...", "message": "..."}}`."""

from __future__ import annotations

import email.message
import enum
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

from botfleet.manager.core.disk_full import disk_full
from botfleet.manager.core.statuses import IllegalTransition


class ErrorCode(enum.StrEnum):
    """Every stable code the API answers in `detail.code`. Clients and tests match on these
    strings: a value never changes; a new refusal gets a new member."""

    # Any route: what the framework or a handler below says about the request itself.
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_INPUT = "invalid_input"
    INVALID_JSON = "invalid_json"
    JSON_TOO_DEEP = "json_too_deep"
    NON_FINITE_NUMBER = "non_finite_number"
    UNSTORABLE_TEXT = "unstorable_text"
    TOO_MANY_REQUESTS = "too_many_requests"
    HTTP_ERROR = "http_error"
    # A dependency (database, engine) that cannot serve now, or a backend that never can.
    DATABASE_BUSY = "database_busy"
    DATABASE_UNAVAILABLE = "database_unavailable"
    DISK_FULL = "disk_full"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    ORCHESTRATOR_ERROR = "orchestrator_error"
    NOT_SUPPORTED = "not_supported"
    STATE_PURGE_FAILED = "state_purge_failed"
    NODE_UNREACHABLE = "node_unreachable"  # the bot's node cannot be reached (its logs)
    LOGS_GONE = "logs_gone"  # the engine collected the bot's logs
    # Credentials and scopes.
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    KEY_EXPIRED = "key_expired"
    USER_DISABLED = "user_disabled"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    FOREIGN_BOT = "foreign_bot"
    USER_KEY_REQUIRED = "user_key_required"
    CROSS_ORIGIN = "cross_origin"
    # Limits: one code per limit, wherever it is hit.
    CONCURRENCY_LIMIT = "concurrency_limit"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_AUTH_FAILURES = "too_many_auth_failures"
    TOO_MANY_STREAMS = "too_many_streams"
    LISTENER_FULL = "listener_full"
    HEARTBEATS_FULL = "heartbeats_full"
    REPORTS_FULL = "reports_full"
    WEBHOOK_LIMIT = "webhook_limit"
    # Unknown, or another user's.
    BOT_NOT_FOUND = "bot_not_found"
    USER_NOT_FOUND = "user_not_found"
    KEY_NOT_FOUND = "key_not_found"
    COMMAND_NOT_FOUND = "command_not_found"
    WEBHOOK_NOT_FOUND = "webhook_not_found"
    KIND_NOT_FOUND = "kind_not_found"
    DELIVERY_NOT_FOUND = "delivery_not_found"
    CAPACITY_NOT_FOUND = "capacity_not_found"
    SCHEDULE_NOT_FOUND = "schedule_not_found"
    OPERATION_NOT_FOUND = "operation_not_found"
    # Illegal in the current state, or a duplicate.
    ILLEGAL_TRANSITION = "illegal_transition"
    BOT_LIVE = "bot_live"
    DUPLICATE_BOT = "duplicate_bot"
    DUPLICATE_USER = "duplicate_user"
    STATE_IN_USE = "state_in_use"
    NOT_EDITABLE = "not_editable"
    KIND_EXISTS = "kind_exists"
    KIND_RETIRED = "kind_retired"
    KIND_BUILTIN = "kind_builtin"
    WEBHOOK_DISABLED = "webhook_disabled"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    # Input the models accept but the manager refuses.
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_STATUS = "invalid_status"
    INVALID_ID = "invalid_id"
    INVALID_LABEL_FILTER = "invalid_label_filter"
    TOO_MANY_LABEL_FILTERS = "too_many_label_filters"
    INVALID_LAST_EVENT_ID = "invalid_last_event_id"
    INVALID_SINCE = "invalid_since"
    EXIT_CODE_REQUIRED = "exit_code_required"
    BOT_NOT_ALLOWED = "bot_not_allowed"
    UNKNOWN_BOT = "unknown_bot"
    INVALID_CRON = "invalid_cron"
    CRON_TOO_FREQUENT = "cron_too_frequent"
    UNKNOWN_TIMEZONE = "unknown_timezone"
    EMPTY_SELECTOR = "empty_selector"
    SELECTOR_TOO_LARGE = "selector_too_large"
    # A body that does not match its kind (detail.errors: [{path, message}], JSON pointers).
    INVALID_CONFIG = "invalid_config"
    INVALID_PAYLOAD = "invalid_payload"
    MISSING_SECRET = "missing_secret"
    UNKNOWN_ACTION = "unknown_action"
    INVALID_SCHEMA = "invalid_schema"
    IMAGE_NOT_ALLOWED = "image_not_allowed"
    STATE_NOT_SUPPORTED = "state_not_supported"
    PLACEMENT_UNSUPPORTED = "placement_unsupported"
    RESOURCES_OVER_LIMIT = "resources_over_limit"
    WEBHOOK_URL_REFUSED = "webhook_url_refused"
    WEBHOOK_HEADER_REFUSED = "webhook_header_refused"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    # The dashboard's forms (shown there as a message; the code is never rendered).
    INVALID_LABELS = "invalid_labels"
    INVALID_RESTART = "invalid_restart"


class BotfleetError(Exception):
    """A refusal the caller can act on. Services raise it; the API renders it."""

    status_code = 400

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
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
    503: "A dependency (database, engine) is unreachable or saturated, or the disk is full "
    "(with Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all shaped as `ErrorOut`.

    A route that can answer 422 takes input, so it also lists 415: the handler below answers
    415 to any JSON body sent as another media type, on every route.
    """
    listed = (*codes, 415) if 422 in codes and 415 not in codes else codes
    return {c: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[c]} for c in sorted(listed)}


def error_body(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"code": code, "message": message, **extra}}


#: Seconds a client is told to wait when the database is saturated.
BUSY_RETRY_AFTER_S = 1


def database_busy() -> JSONResponse:
    """503 `database_busy`: every place or pooled connection stayed taken for the allowed wait
    (manager/http/admission.py, BOTFLEET_DB_POOL_TIMEOUT_S). Retrying shortly is the right move."""
    return JSONResponse(
        error_body(ErrorCode.DATABASE_BUSY, "the database is saturated; retry shortly"),
        503,
        headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
    )


#: Seconds a client is told to wait when the data disk is full: space comes back when someone
#: frees it, not in a moment.
DISK_FULL_RETRY_AFTER_S = 10


def disk_full_answer() -> JSONResponse:
    """503 `disk_full`: the database (or the manager's data folder) has no space left. Reads
    still answer; writes do again, with no restart, once space is freed."""
    return JSONResponse(
        error_body(
            ErrorCode.DISK_FULL,
            "the manager's disk is full: reads work, writes are refused until space is freed",
        ),
        503,
        headers={"Retry-After": str(DISK_FULL_RETRY_AFTER_S)},
    )


#: The code of an error the framework raises with a bare status (an unknown route, a method).
HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.BODY_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.INVALID_INPUT,
    429: ErrorCode.TOO_MANY_REQUESTS,
}


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


JSON_BODY_HINT = "send the body as JSON with Content-Type: application/json"


def is_json_media_type(content_type: str | None) -> bool:
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
                ErrorCode.INVALID_JSON,
                f"invalid JSON at line {where.lineno}, column {where.colno}: {reason}",
                line=where.lineno,
                column=where.colno,
            ),
            422,
        )
    if tuple(first.get("loc", ())) != ("body",):
        return None
    content_type = request.headers.get("content-type")
    if isinstance(exc.body, bytes) and exc.body and not is_json_media_type(content_type):
        sent = f"it came as {content_type}" if content_type else "it came without a Content-Type"
        return JSONResponse(
            error_body(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{JSON_BODY_HINT}; {sent}"), 415
        )
    if first.get("type") == "missing":
        return JSONResponse(
            error_body(ErrorCode.INVALID_INPUT, f"body: the request has none; {JSON_BODY_HINT}"),
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
            error_body(
                ErrorCode.ILLEGAL_TRANSITION, str(exc), status=exc.current, requested=exc.target
            ),
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
            error_body(ErrorCode.INVALID_INPUT, f"{where}: {first['msg']}", errors=errors), 422
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if disk_full(exc):
            return disk_full_answer()
        if not exc.connection_invalidated and not isinstance(exc, OperationalError):
            raise exc
        return JSONResponse(
            error_body(
                ErrorCode.DATABASE_UNAVAILABLE, "the database is unreachable; retry shortly"
            ),
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
        code = HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)
