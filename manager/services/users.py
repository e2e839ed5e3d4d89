"""Users and their API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from manager.errors import Conflict, NotFound
from manager.models import ApiKey, User
from manager.security import API_KEY_PREFIX, digest, new_secret, same
from manager.services.pages import PageRequest, read_page


def create_user(session: Session, *, name: str, max_concurrent_bots: int) -> tuple[User, str]:
    """Create a user and its first API key; return both (the key in clear, this once)."""
    if session.scalar(select(User.id).where(User.name == name)):
        raise Conflict("duplicate_user", f"a user named {name!r} exists")
    user = User(name=name, max_concurrent_bots=max_concurrent_bots)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("duplicate_user", f"a user named {name!r} exists") from exc
    return user, issue_key(session, user=user)


def issue_key(session: Session, *, user: User) -> str:
    key = new_secret(API_KEY_PREFIX)
    session.add(ApiKey(user_id=user.id, key_hash=digest(key), prefix=key[:8]))
    session.flush()
    return key


def create_key(session: Session, user_id: str) -> str:
    """A new API key for the user, in clear this once (only its hash is stored)."""
    return issue_key(session, user=get_user(session, user_id))


def get_user(session: Session, user_id: str, *, for_update: bool = False) -> User:
    query = select(User).where(User.id == user_id)
    if for_update:
        query = query.with_for_update()
    user = session.scalar(query)
    if user is None:
        raise NotFound("user_not_found", f"no user {user_id}")
    return user


def user_for_key(session: Session, key: str) -> User | None:
    """The user owning this (unrevoked) API key, or None."""
    hashed = digest(key)
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hashed, ApiKey.revoked_at.is_(None))
    )
    if row is None or not same(row.key_hash, hashed):
        return None
    return row.user


def list_users(
    session: Session, *, page: PageRequest = PageRequest()
) -> tuple[list[User], str | None]:
    """A page of users, oldest first (ids are time-ordered)."""
    return read_page(session, select(User), keys=[User.id], page=page)


def set_limit(session: Session, *, user_id: str, max_concurrent_bots: int) -> User:
    user = get_user(session, user_id, for_update=True)
    user.max_concurrent_bots = max_concurrent_bots
    return user


def ensure_user(session: Session, *, name: str, max_concurrent_bots: int) -> tuple[User, str]:
    """The named user with a fresh API key, created when missing (for `make run`)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        return create_user(session, name=name, max_concurrent_bots=max_concurrent_bots)
    return user, issue_key(session, user=user)
