"""Who is calling: the user an API key belongs to, or the bot a bot token belongs to.

The heartbeat and report paths, which take no row lock, find a bot token's bot through the
credential cache itself (`manager/hot_path/credentials.py`: `known_bot_for_token`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import ErrorCode, Forbidden, Unauthorized
from botfleet.manager.core.models import ApiKey, Bot, User, utcnow
from botfleet.manager.core.secrets import digest, same
from botfleet.manager.hot_path.credentials import CredentialCache, KnownKey, check_bot_path

SCOPE_READ = "bots:read"
SCOPE_WRITE = "bots:write"
SCOPES = (SCOPE_READ, SCOPE_WRITE)


@dataclass(frozen=True)
class Caller:
    """Who sends a request with an API key: the user (`id`), which of its keys, what it may."""

    id: str
    key_id: str
    scopes: frozenset[str] = frozenset(SCOPES)


def caller_for_key(session: Session, cache: CredentialCache | None, *, token: str) -> Caller:
    """The caller an API key belongs to, from the credential cache when it knows the key (no
    query), else from the database (then cached); 401 for an unknown, revoked or expired key
    or a disabled user.

    Revocation and disabling are commits that drop the cached entry on every replica
    (`manager/hot_path/credentials.py`); expiry needs no commit, so it is compared on every hit.
    """
    hashed = digest(token)
    known = cache.get(hashed) if cache is not None else None
    if not isinstance(known, KnownKey):
        generation = cache.generation() if cache is not None else 0
        row = session.execute(
            select(
                ApiKey.id,
                ApiKey.user_id,
                ApiKey.key_hash,
                ApiKey.scopes,
                ApiKey.expires_at,
                User.disabled_at,
            )
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == hashed, ApiKey.revoked_at.is_(None))
        ).first()
        if row is None or not same(row.key_hash, hashed):
            raise Unauthorized(ErrorCode.INVALID_TOKEN, "this API key is unknown or revoked")
        if row.disabled_at is not None:
            raise Unauthorized(ErrorCode.USER_DISABLED, "this API key's user is disabled")
        known = KnownKey(
            user_id=row.user_id,
            key_id=row.id,
            scopes=frozenset(row.scopes.split()),
            expires_at=row.expires_at,
        )
        if cache is not None:
            cache.put(hashed, known, generation=generation)
    if known.expires_at is not None and known.expires_at <= utcnow():
        raise Unauthorized(ErrorCode.KEY_EXPIRED, "this API key has expired")
    return Caller(id=known.user_id, key_id=known.key_id, scopes=known.scopes)


def check_scope(caller: Caller, *, writes: bool) -> None:
    """403 `insufficient_scope` for a request that changes something, sent with a key that may
    only read."""
    if writes and SCOPE_WRITE not in caller.scopes:
        raise Forbidden(ErrorCode.INSUFFICIENT_SCOPE, f"this API key lacks the {SCOPE_WRITE} scope")


def bot_for_token(session: Session, *, token: str, bot_id: str, lock: bool) -> Bot:
    """The bot whose token this is, which must be the bot in the path; with `lock`, its row is
    locked in the same statement, for a callback that changes it.

    A token that belongs to no live bot is 401 (a bot's token dies with it); a live bot's token
    on another bot's path is 403 and changes nothing.
    """
    hashed = digest(token)
    query = select(Bot).where(Bot.token_hash == hashed)
    owner = session.scalar(query.with_for_update() if lock else query)
    if owner is None or owner.token_hash is None or not same(owner.token_hash, hashed):
        raise Unauthorized(
            ErrorCode.INVALID_TOKEN, "this bot token is unknown or its bot has ended"
        )
    check_bot_path(owner.id, bot_id)
    return owner
