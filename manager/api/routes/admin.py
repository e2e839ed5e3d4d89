"""Operator calls: users, their limits and their API keys (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, status

from manager.api.deps import AdminDep, SessionDep, SettingsDep
from manager.api.pages import PageQuery
from manager.errors import error_responses
from manager.schemas import (
    ApiKeyCreated,
    Page,
    UserCreate,
    UserPublic,
    UserUpdate,
    UserWithKey,
)
from manager.services import users

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


@router.patch("/users/{user_id}", response_model=UserPublic)
def update_user(user_id: str, body: UserUpdate, session: SessionDep) -> UserPublic:
    user = users.set_limit(session, user_id=user_id, max_concurrent_bots=body.max_concurrent_bots)
    return UserPublic.model_validate(user)


@router.post(
    "/users/{user_id}/keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated
)
def create_key(user_id: str, session: SessionDep) -> ApiKeyCreated:
    return ApiKeyCreated(user_id=user_id, api_key=users.create_key(session, user_id))
