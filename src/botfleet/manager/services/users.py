"""Users and their API keys. Every admin change is written to the admin log in the same
transaction (`manager/services/audit.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from types import EllipsisType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, NotFound
from botfleet.manager.core.models import ApiKey, User, utcnow
from botfleet.manager.core.secrets import API_KEY_PREFIX, digest, new_secret, same
from botfleet.manager.services import audit
from botfleet.manager.services.keyset import PageRequest, read_page

ALL_SCOPES = ("bots:read", "bots:write")


def create_user(session: Session, *, name: str, max_concurrent_bots: int) -> tuple[User, str]:
    """Create a user and its first API key; return both (the key in clear, this once)."""
    if session.scalar(select(User.id).where(User.name == name)):
        raise Conflict(ErrorCode.DUPLICATE_USER, f"a user named {name!r} exists")
    user = User(name=name, max_concurrent_bots=max_concurrent_bots)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(ErrorCode.DUPLICATE_USER, f"a user named {name!r} exists") from exc
    audit.record_admin_action(
        session,
        action=audit.USER_CREATED,
        target=f"user:{user.id}",
        user_id=user.id,
        change={"name": name, "max_concurrent_bots": max_concurrent_bots},
    )
    return user, issue_key(session, user=user)


def issue_key(session: Session, *, user: User) -> str:
    """A new key with every scope and no expiry, in clear this once."""
    return _new_key(session, user=user)[1]


def _new_key(
    session: Session,
    *,
    user: User,
    name: str | None = None,
    scopes: Sequence[str] = ALL_SCOPES,
    expires_in_s: int | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key's hash; return its row and the key in clear, this once."""
    key = new_secret(API_KEY_PREFIX)
    row = ApiKey(
        user_id=user.id,
        key_hash=digest(key),
        prefix=key[:8],
        name=name,
        scopes=" ".join(s for s in ALL_SCOPES if s in scopes),  # one order, no duplicates
        expires_at=utcnow() + timedelta(seconds=expires_in_s) if expires_in_s else None,
    )
    session.add(row)
    session.flush()
    return row, key


def create_key(
    session: Session,
    user_id: str,
    *,
    name: str | None = None,
    scopes: Sequence[str] = ALL_SCOPES,
    expires_in_s: int | None = None,
) -> tuple[ApiKey, str]:
    """A new API key for the user: the row, and the key in clear this once (only its hash is
    stored). The key's prefix goes to the admin log, never the key."""
    user = get_user(session, user_id)
    row, key = _new_key(session, user=user, name=name, scopes=scopes, expires_in_s=expires_in_s)
    audit.record_admin_action(
        session,
        action=audit.KEY_CREATED,
        target=f"key:{row.id}",
        user_id=user.id,
        change={
            "prefix": row.prefix,
            "name": name,
            "scopes": row.scopes.split(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
    )
    return row, key


def list_keys(
    session: Session, user_id: str, *, page: PageRequest = PageRequest()
) -> tuple[list[ApiKey], str | None]:
    """A page of the user's unrevoked keys, oldest first; 404 for an unknown user."""
    get_user(session, user_id)
    query = select(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    return read_page(session, query, keys=[ApiKey.id], page=page)


def revoke_key(session: Session, *, user_id: str, key_id: str) -> ApiKey:
    """Revoke the user's key: committing it drops the key from every replica's credential
    cache, so it answers 401 at once. 404 for a key that is not this user's or already
    revoked."""
    key = session.scalar(
        select(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .with_for_update()
    )
    if key is None:
        raise NotFound(ErrorCode.KEY_NOT_FOUND, f"no live key {key_id} of user {user_id}")
    key.revoked_at = utcnow()
    audit.record_admin_action(
        session,
        action=audit.KEY_REVOKED,
        target=f"key:{key.id}",
        user_id=user_id,
        change={"prefix": key.prefix, "name": key.name},
    )
    return key


def get_user(session: Session, user_id: str, *, for_update: bool = False) -> User:
    query = select(User).where(User.id == user_id)
    if for_update:
        query = query.with_for_update()
    user = session.scalar(query)
    if user is None:
        raise NotFound(ErrorCode.USER_NOT_FOUND, f"no user {user_id}")
    return user


def user_for_key(session: Session, key: str) -> User | None:
    """The enabled user owning this unrevoked, unexpired API key, or None."""
    hashed = digest(key)
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hashed, ApiKey.revoked_at.is_(None))
    )
    if row is None or not same(row.key_hash, hashed):
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    return row.user if row.user.disabled_at is None else None


def list_users(
    session: Session, *, page: PageRequest = PageRequest()
) -> tuple[list[User], str | None]:
    """A page of users, oldest first (ids are time-ordered)."""
    return read_page(session, select(User), keys=[User.id], page=page)


def set_limit(session: Session, *, user_id: str, max_concurrent_bots: int) -> User:
    return update_user(session, user_id=user_id, max_concurrent_bots=max_concurrent_bots)


def update_user(
    session: Session,
    *,
    user_id: str,
    max_concurrent_bots: int | None = None,
    disabled: bool | None = None,
    default_restart: dict[str, Any] | EllipsisType | None = ...,
    queue_by_default: bool | None = None,
) -> User:
    """Change a user's limit and/or disable (or enable) it, logging what changed.

    Disabling makes every key of the user answer 401 at once on every replica (the commit drops
    `user:<id>` from the credential caches); its bots run on, and the admin may stop them.
    """
    user = get_user(session, user_id, for_update=True)
    change: dict[str, Any] = {}
    if max_concurrent_bots is not None and max_concurrent_bots != user.max_concurrent_bots:
        change["max_concurrent_bots"] = [user.max_concurrent_bots, max_concurrent_bots]
        user.max_concurrent_bots = max_concurrent_bots
    if disabled is not None and disabled != (user.disabled_at is not None):
        change["disabled"] = [not disabled, disabled]
        user.disabled_at = utcnow() if disabled else None
    if default_restart is not ... and default_restart != user.default_restart:
        change["default_restart"] = [user.default_restart, default_restart]
        user.default_restart = default_restart  # `...`: not sent, unchanged; None: removed
    if queue_by_default is not None and queue_by_default != user.queue_by_default:
        change["queue_by_default"] = [user.queue_by_default, queue_by_default]
        user.queue_by_default = queue_by_default
    if change:
        audit.record_admin_action(
            session,
            action=audit.USER_UPDATED,
            target=f"user:{user.id}",
            user_id=user.id,
            change=change,
        )
    return user


def ensure_user(session: Session, *, name: str, max_concurrent_bots: int) -> tuple[User, str]:
    """The named user with a fresh API key, created when missing (for `make run`)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        return create_user(session, name=name, max_concurrent_bots=max_concurrent_bots)
    return user, issue_key(session, user=user)
