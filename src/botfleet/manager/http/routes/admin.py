"""Operator calls: users, their limits and their API keys, the admin log (admin token)."""

from __future__ import annotations

import re
from datetime import datetime
from types import EllipsisType
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BeforeValidator

from botfleet.manager.core.errors import ErrorCode, Invalid, error_responses
from botfleet.manager.http.deps import AdminDep, SessionDep, SettingsDep
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.api import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    AuditEntry,
    Page,
    UserCreate,
    UserPublic,
    UserUpdate,
    UserWithKey,
)
from botfleet.manager.schemas.bounds import in_utc_range
from botfleet.manager.services import audit, users

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
)


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserWithKey)
def create_user(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserWithKey:
    limit = body.max_concurrent_bots
    if limit is None:
        limit = settings.default_max_concurrent_bots
    user, key = users.create_user(session, name=body.name, max_concurrent_bots=limit)
    return UserWithKey(**UserPublic.model_validate(user).model_dump(), api_key=key)


@router.get("/users", response_model=Page[UserPublic])
def list_users(session: SessionDep, page: PageQuery) -> Page[UserPublic]:
    """Every user, oldest first, a page at a time."""
    rows, next_cursor = users.list_users(session, page=page)
    return Page(items=[UserPublic.model_validate(u) for u in rows], next_cursor=next_cursor)


@router.get("/users/{user_id}", response_model=UserPublic)
def get_user(user_id: str, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(users.get_user(session, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    summary="Change a user's limit, or disable it",
    description=(
        "Only the fields sent change. `disabled: true` makes every key of the user answer 401 "
        "at once on every replica; its bots run on (the admin may stop them with "
        "`POST /bots/{id}/stop`); `false` enables it again. `default_restart` "
        "(`{max_retries, backoff_s, on?}`) is the restart policy of the user's new bots that "
        "name none; `null` removes it. `queue_by_default: true` makes the user's bots over a "
        "limit wait `queued` unless their POST says `queue: false`. Each change is in "
        "`GET /admin/audit`."
    ),
)
def update_user(user_id: str, body: UserUpdate, session: SessionDep) -> UserPublic:
    user = users.update_user(
        session,
        user_id=user_id,
        max_concurrent_bots=body.max_concurrent_bots,
        disabled=body.disabled,
        default_restart=_default_restart(body),
        queue_by_default=body.queue_by_default,
    )
    return UserPublic.model_validate(user)


def _default_restart(body: UserUpdate) -> dict[str, Any] | EllipsisType | None:
    """The policy sent (None: `null`, remove it), or `...` when the field was not sent."""
    if "default_restart" not in body.model_fields_set:
        return ...
    policy = body.default_restart
    return policy.model_dump(mode="json", exclude_none=True) if policy is not None else None


@router.post(
    "/users/{user_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description=(
        "A new key for the user, shown this once in `api_key` (only its hash is stored). "
        "`scopes` default to both; a `bots:read` key answers 403 `insufficient_scope` on every "
        "write. `expires_in_s`: the key answers 401 after that long. 404 `user_not_found`."
    ),
)
def create_key(
    user_id: str, session: SessionDep, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    body = body or ApiKeyCreate()
    row, key = users.create_key(
        session, user_id, name=body.name, scopes=body.scopes, expires_in_s=body.expires_in_s
    )
    return ApiKeyCreated(**ApiKeyPublic.model_validate(row).model_dump(), api_key=key)


@router.get(
    "/users/{user_id}/keys",
    response_model=Page[ApiKeyPublic],
    summary="List a user's API keys",
    description="The user's live (unrevoked) keys, oldest first, a page at a time: never the "
    "key itself. `last_used_at` is at most about a minute old.",
)
def list_keys(user_id: str, session: SessionDep, page: PageQuery) -> Page[ApiKeyPublic]:
    rows, next_cursor = users.list_keys(session, user_id, page=page)
    return Page(items=[ApiKeyPublic.model_validate(k) for k in rows], next_cursor=next_cursor)


@router.delete(
    "/users/{user_id}/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key",
    description="The key answers 401 at once on every replica. 404 `key_not_found` for a key "
    "that is not this user's or is already revoked.",
)
def revoke_key(user_id: str, key_id: str, session: SessionDep) -> Response:
    users.revoke_key(session, user_id=user_id, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    """`since` is an ISO time: a bare number (which pydantic would read as a Unix time) is not."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("since must be an ISO time with a zone, e.g. 2026-01-01T10:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


@router.get(
    "/audit",
    response_model=Page[AuditEntry],
    summary="The admin log",
    description="Admin actions, newest first, a page at a time: users created, limits changed, "
    "users disabled or enabled, keys created or revoked, each with `at`, `action`, `target` "
    "and `change`. `user_id` keeps one user's; `since` (ISO time with a zone) those at or after.",
)
def list_audit(
    session: SessionDep,
    page: PageQuery,
    user_id: Annotated[str | None, Query(max_length=36)] = None,
    since: Annotated[IsoTime | None, Query(description="ISO time with a zone")] = None,
) -> Page[AuditEntry]:
    if since is not None and since.tzinfo is None:
        raise Invalid(ErrorCode.INVALID_SINCE, "since needs a time zone, e.g. 2026-01-01T10:00:00Z")
    if since is not None and not in_utc_range(since):
        raise Invalid(ErrorCode.INVALID_SINCE, "since is out of range")
    rows, next_cursor = audit.list_admin_actions(session, user_id=user_id, since=since, page=page)
    return Page(items=[AuditEntry.model_validate(a) for a in rows], next_cursor=next_cursor)
