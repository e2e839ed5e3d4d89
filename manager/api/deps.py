"""Request dependencies: the session, the fleet, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.config import Settings
from manager.errors import Forbidden, Unauthorized
from manager.models import Bot, User
from manager.security import bearer_token, digest, same
from manager.services.fleet import Fleet
from manager.services.users import user_for_key


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet  # type: ignore[no-any-return]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
FleetDep = Annotated[Fleet, Depends(get_fleet)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AuthHeader = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


def _token(authorization: str | None) -> str:
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("missing_token", "send Authorization: Bearer <api key>")
    return token


# Authentication uses its own short session rather than SessionDep, so a request never holds
# two pooled connections at once (the route's writes open their own transaction).


def get_current_user(request: Request, authorization: AuthHeader = None) -> User:
    token = _token(authorization)
    with request.app.state.sessions() as session:
        user = user_for_key(session, token)
        if user is None:
            raise Unauthorized("invalid_token", "this API key is unknown or revoked")
        session.expunge(user)
    return user


def require_admin(request: Request, authorization: AuthHeader = None) -> None:
    expected: str = request.app.state.admin_token
    if not same(_token(authorization), expected):
        raise Unauthorized("invalid_token", "admin calls need the admin token")


def get_calling_bot(
    request: Request,
    bot_id: Annotated[str, Path(max_length=64)],
    authorization: AuthHeader = None,
) -> Bot:
    """The bot whose token this is, which must be the bot in the path.

    A token that belongs to no live bot is 401 (a bot's token dies with it); a live bot's token
    on another bot's path is 403 and changes nothing.
    """
    hashed = digest(_token(authorization))
    with request.app.state.sessions() as session:
        owner = session.scalar(select(Bot).where(Bot.token_hash == hashed))
    if owner is None or owner.token_hash is None or not same(owner.token_hash, hashed):
        raise Unauthorized("invalid_token", "this bot token is unknown or its bot has ended")
    if owner.id != bot_id:
        raise Forbidden("foreign_bot", "a bot's token is valid for its own paths only")
    return owner


@dataclass(frozen=True)
class Viewing:
    """Who reads a stream: a user (their bots) or the admin (user_id None: every bot)."""

    user_id: str | None


def get_viewer(request: Request, authorization: AuthHeader = None) -> Viewing:
    token = _token(authorization)
    if same(token, request.app.state.admin_token):
        return Viewing(user_id=None)
    return Viewing(user_id=get_current_user(request, authorization).id)


CurrentUser = Annotated[User, Depends(get_current_user)]
Viewer = Annotated[Viewing, Depends(get_viewer)]
AdminDep = Depends(require_admin)
CallingBot = Annotated[Bot, Depends(get_calling_bot)]
