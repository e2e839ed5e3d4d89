"""Request dependencies: the request's one transaction, the fleet, and who is calling.

Dependencies translate (headers into credentials, the app's state into objects); the lookups
themselves are service functions (`manager/services/auth.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.orm import Session

from manager.config import Settings
from manager.errors import Unauthorized
from manager.models import Bot
from manager.security import bearer_token, same
from manager.services import auth
from manager.services.fleet import Fleet
from manager.services.unit_of_work import unit_of_work

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    """The request's one transaction, shared by authentication and the route.

    A read (GET) gets a plain session, so it never takes SQLite's write lock. A write gets a
    unit of work: committed as soon as the route returns, before the answer is sent (the
    dependency's scope is "function"), then followed by the side effects the route queued
    (`manager/services/unit_of_work.py`). An error rolls everything back.
    """
    sessions = request.app.state.sessions
    if request.method in READ_METHODS:
        with sessions() as session:
            yield session
    else:
        with unit_of_work(sessions) as session:
            yield session


def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet  # type: ignore[no-any-return]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
FleetDep = Annotated[Fleet, Depends(get_fleet)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AuthHeader = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
BotPath = Annotated[str, Path(max_length=64)]


def _token(authorization: str | None) -> str:
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("missing_token", "send Authorization: Bearer <api key>")
    return token


bot_token = _token  # a bot sends its token the same way


def get_current_user(
    request: Request, session: SessionDep, authorization: AuthHeader = None
) -> auth.Caller:
    cache = getattr(request.app.state, "credentials", None)
    return auth.caller_for_key(session, cache, token=_token(authorization))


def authenticate_before_transaction(request: Request, authorization: AuthHeader = None) -> str:
    """The caller's user id, from a short read of its own that returns its connection at once.

    For the few routes that must do network I/O (a webhook URL's DNS lookup) before their write
    transaction opens: no pooled connection may wait on the network, and an unauthenticated
    caller must never make the manager do that I/O.
    """
    with request.app.state.sessions() as session:
        return auth.user_for_token(session, token=_token(authorization)).id


def require_admin(request: Request, authorization: AuthHeader = None) -> None:
    expected: str = request.app.state.admin_token
    if not same(_token(authorization), expected):
        raise Unauthorized("invalid_token", "admin calls need the admin token")


def get_calling_bot(session: SessionDep, bot_id: BotPath, authorization: AuthHeader = None) -> Bot:
    """The bot whose token this is, which must be the bot in the path (reads)."""
    return auth.bot_for_token(session, token=_token(authorization), bot_id=bot_id, lock=False)


def lock_calling_bot(session: SessionDep, bot_id: BotPath, authorization: AuthHeader = None) -> Bot:
    """The calling bot with its row locked in the same statement (callbacks that change it)."""
    return auth.bot_for_token(session, token=_token(authorization), bot_id=bot_id, lock=True)


@dataclass(frozen=True)
class Viewing:
    """Who reads a stream: a user (their bots) or the admin (user_id None: every bot)."""

    user_id: str | None


def get_viewer(request: Request, session: SessionDep, authorization: AuthHeader = None) -> Viewing:
    token = _token(authorization)
    if same(token, request.app.state.admin_token):
        return Viewing(user_id=None)
    cache = getattr(request.app.state, "credentials", None)
    return Viewing(user_id=auth.caller_for_key(session, cache, token=token).id)


CurrentUser = Annotated[auth.Caller, Depends(get_current_user)]
Viewer = Annotated[Viewing, Depends(get_viewer)]
AdminDep = Depends(require_admin)
CallingBot = Annotated[Bot, Depends(get_calling_bot)]
LockedCallingBot = Annotated[Bot, Depends(lock_calling_bot)]
