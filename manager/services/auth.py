"""Who is calling: the user an API key belongs to, or the bot a bot token belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.credential_cache import CredentialCache, KnownBot, KnownKey
from manager.errors import Forbidden, Unauthorized
from manager.models import ApiKey, Bot, User
from manager.security import digest, same
from manager.services.users import user_for_key


def user_for_token(session: Session, *, token: str) -> User:
    """The user owning this API key; 401 for an unknown or revoked key."""
    user = user_for_key(session, token)
    if user is None:
        raise Unauthorized("invalid_token", "this API key is unknown or revoked")
    return user


@dataclass(frozen=True)
class Caller:
    """Who sends a request with an API key: the user (`id`) and which of its keys."""

    id: str
    key_id: str


def caller_for_key(session: Session, cache: CredentialCache | None, *, token: str) -> Caller:
    """The caller an API key belongs to, from the credential cache when it knows the key (no
    query), else from the database (then cached); 401 for an unknown or revoked key."""
    hashed = digest(token)
    known = cache.get(hashed) if cache is not None else None
    if not isinstance(known, KnownKey):
        generation = cache.generation() if cache is not None else 0
        row = session.execute(
            select(ApiKey.id, ApiKey.user_id, ApiKey.key_hash).where(
                ApiKey.key_hash == hashed, ApiKey.revoked_at.is_(None)
            )
        ).first()
        if row is None or not same(row.key_hash, hashed):
            raise Unauthorized("invalid_token", "this API key is unknown or revoked")
        known = KnownKey(user_id=row.user_id, key_id=row.id)
        if cache is not None:
            cache.put(hashed, known, generation=generation)
    return Caller(id=known.user_id, key_id=known.key_id)


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
        raise Unauthorized("invalid_token", "this bot token is unknown or its bot has ended")
    check_bot_path(owner.id, bot_id)
    return owner


def known_bot_for_digest(session: Session, *, hashed: str) -> KnownBot:
    """The bot a token digest belongs to and its status, for the token cache
    (`manager/credential_cache.py`); 401 as `bot_for_token` when it belongs to no live bot."""
    row = session.execute(
        select(Bot.id, Bot.status, Bot.token_hash).where(Bot.token_hash == hashed)
    ).first()
    if row is None or row.token_hash is None or not same(row.token_hash, hashed):
        raise Unauthorized("invalid_token", "this bot token is unknown or its bot has ended")
    return KnownBot(bot_id=row.id, status=row.status)


def check_bot_path(owner_id: str, bot_id: str) -> None:
    """A live bot's token on another bot's path is 403 and changes nothing."""
    if owner_id != bot_id:
        raise Forbidden("foreign_bot", "a bot's token is valid for its own paths only")
