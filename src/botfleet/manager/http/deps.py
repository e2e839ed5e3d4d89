"""Request dependencies: the app's state, the request's one transaction, and who is calling.

Dependencies translate (headers into credentials, the app's state into objects); the lookups
themselves are service functions (`manager/services/auth.py`). The app's state is one typed
object (`manager/http/app_state.py`): routes and the dashboard take it, or the one part they
use, from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import ErrorCode, Unauthorized
from botfleet.manager.core.models import Bot
from botfleet.manager.core.secrets import same
from botfleet.manager.core.settings import Settings
from botfleet.manager.http.app_state import AppState, app_state
from botfleet.manager.services import audit, auth
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.unit_of_work import unit_of_work

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_app_state(request: Request) -> AppState:
    return app_state(request)


AppStateDep = Annotated[AppState, Depends(get_app_state)]


def get_session(request: Request, state: AppStateDep) -> Iterator[Session]:
    """The request's one transaction, shared by authentication and the route.

    A read (GET) gets a plain session, so it never takes SQLite's write lock. A write gets a
    unit of work: committed as soon as the route returns, before the answer is sent (the
    dependency's scope is "function"), then followed by the side effects the route queued
    (`manager/services/unit_of_work.py`). An error rolls everything back.
    """
    sessions = state.sessions
    if request.method in READ_METHODS:
        with sessions() as session:
            yield session
    else:
        with unit_of_work(sessions) as session:
            yield session


def get_bot_requests(state: AppStateDep) -> BotRequests:
    return state.bots


def get_settings_dep(state: AppStateDep) -> Settings:
    return state.settings


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
BotRequestsDep = Annotated[BotRequests, Depends(get_bot_requests)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BotPath = Annotated[str, Path(max_length=64)]

#: The scheme every user and admin route declares in the OpenAPI document, which gives `/docs`
#: its Authorize button. `auto_error=False`: a missing token is our own 401, not FastAPI's 403.
BEARER = HTTPBearer(
    scheme_name="bearerAuth",
    description="A user's API key (`bf_...`), or the admin token (`bfa_...`) for the `/admin` "
    "routes and the whole fleet's bots. Sent as `Authorization: Bearer <token>`; in the "
    "Authorize dialog paste the token alone.",
    auto_error=False,
)
#: The bots' own tokens, declared in the callbacks' document (`/internal/openapi.json`).
BOT_BEARER = HTTPBearer(
    scheme_name="botToken",
    description="The bot's own token (`BOTFLEET_BOT_TOKEN`, handed to the bot at launch), as "
    "`Authorization: Bearer <token>`.",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
BotCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BOT_BEARER)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The token of `Authorization: Bearer <token>` (HTTPBearer reads the header as
    `core.secrets.bearer_token` does: scheme case-insensitive, token stripped)."""
    if credentials is None:
        raise Unauthorized(ErrorCode.MISSING_TOKEN, "send Authorization: Bearer <api key>")
    return credentials.credentials


bot_token = _token  # a bot sends its token the same way


def _key_caller(request: Request, state: AppState, session: Session, token: str) -> auth.Caller:
    """The one place an API key is checked for every route: known, unrevoked, unexpired, its
    user enabled (401), and allowed to write when the request writes (403
    `insufficient_scope`). Its use is noted (`last_used_at`, manager/hot_path/key_usage.py) and what
    the request changes is attributed to it (`manager/services/audit.py`)."""
    caller = auth.caller_for_key(session, state.credentials, token=token)
    auth.check_scope(caller, writes=request.method not in READ_METHODS)
    state.key_usage.touch(caller.key_id)
    audit.set_request_actor(session, audit.key_actor(caller.key_id))
    return caller


def get_current_user(
    request: Request, state: AppStateDep, session: SessionDep, credentials: Credentials
) -> auth.Caller:
    return _key_caller(request, state, session, _token(credentials))


def authenticate_before_transaction(
    request: Request, state: AppStateDep, credentials: Credentials
) -> str:
    """The caller's user id, from a short read of its own that returns its connection at once.

    For the few routes that must do network I/O (a webhook URL's DNS lookup) before their write
    transaction opens: no pooled connection may wait on the network, and an unauthenticated
    caller must never make the manager do that I/O.
    """
    with state.sessions() as session:
        return _key_caller(request, state, session, _token(credentials)).id


def require_admin(state: AppStateDep, credentials: Credentials) -> None:
    if not same(_token(credentials), state.admin_token):
        raise Unauthorized(ErrorCode.INVALID_TOKEN, "admin calls need the admin token")


def get_calling_bot(session: SessionDep, bot_id: BotPath, credentials: BotCredentials) -> Bot:
    """The bot whose token this is, which must be the bot in the path (reads)."""
    return auth.bot_for_token(session, token=_token(credentials), bot_id=bot_id, lock=False)


def lock_calling_bot(session: SessionDep, bot_id: BotPath, credentials: BotCredentials) -> Bot:
    """The calling bot with its row locked in the same statement (callbacks that change it)."""
    return auth.bot_for_token(session, token=_token(credentials), bot_id=bot_id, lock=True)


@dataclass(frozen=True)
class Viewing:
    """Who reads or stops bots: a user (their bots) or the admin (user_id None: every bot; the
    admin fleet view)."""

    user_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


def get_viewer(
    request: Request, state: AppStateDep, session: SessionDep, credentials: Credentials
) -> Viewing:
    """The admin token or a user's API key, for the routes both may call (reads, stop,
    delete); the admin's changes are attributed to `admin`."""
    token = _token(credentials)
    if same(token, state.admin_token):
        audit.set_request_actor(session, audit.ADMIN)
        return Viewing(user_id=None)
    return Viewing(user_id=_key_caller(request, state, session, token).id)


CurrentUser = Annotated[auth.Caller, Depends(get_current_user)]
Viewer = Annotated[Viewing, Depends(get_viewer)]
AdminDep = Depends(require_admin)
CallingBot = Annotated[Bot, Depends(get_calling_bot)]
LockedCallingBot = Annotated[Bot, Depends(lock_calling_bot)]
