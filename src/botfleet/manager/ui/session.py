"""Who is using the dashboard: a session cookie that holds the credential sealed, checked again
on every request through the API's own path, so a revoked key or a disabled user ends the
session at once.

The cookie is a Fernet token (encrypted and signed, with a TTL) whose key is derived from the
admin token: every replica can open it, and changing the admin token ends every session. The
credential itself never travels in a URL: sign-in is a POST form.

CSRF: every state-changing request carries a token bound to the cookie (an HMAC of it), in the
form field `csrf_token` or the `X-CSRF-Token` header; without it the request is refused (403).
The cookie is also SameSite=Strict. Each cookie names a random session id: sign-out records it
server-side, and sign-in checks the Origin and counts failures (`session_guard`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from botfleet.manager.core.errors import BotfleetError, ErrorCode
from botfleet.manager.core.models import User
from botfleet.manager.core.secrets import same
from botfleet.manager.http.deps import READ_METHODS, SessionDep, app_state
from botfleet.manager.http.rate_limit import buckets_for
from botfleet.manager.services import audit, auth
from botfleet.manager.ui import session_guard
from botfleet.manager.ui.templating import render, secure

COOKIE = "botfleet_ui"
COOKIE_PATH = "/ui"
SESSION_TTL_S = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


class UiRateLimited(Exception):
    """Over the key's request budget (the API's `rate_limited`): a 429 page."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message, self.retry_after_s = message, retry_after_s


class UiForbidden(Exception):
    """Signed in, but not allowed here (a user on an admin page, a missing CSRF token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class UiCaller:
    """The signed-in person: a user (`user_id`) or the admin (`user_id` None).

    `credential` is the API key or admin token to call services with; `csrf_token` goes into
    every state-changing form (templating.render adds it)."""

    user_id: str | None
    credential: str
    csrf_token: str
    key_id: str | None = None
    user_name: str | None = None  # the header shows it (a user's id says nothing to a person)

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


@lru_cache(maxsize=8)
def _derive(admin_token: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        admin_token.encode()
    )


def _fernet(request: Request) -> Fernet:
    key = _derive(app_state(request).admin_token, b"botfleet ui session v1")
    return Fernet(base64.urlsafe_b64encode(key))


def seal_session(request: Request, credential: str) -> str:
    """The cookie value for a credential that has just been checked, under a new session id."""
    sealed = {"c": credential, "s": secrets.token_urlsafe(16)}
    return _fernet(request).encrypt(json.dumps(sealed).encode()).decode()


def csrf_for(request: Request, cookie: str) -> str:
    """The CSRF token bound to one session cookie."""
    key = _derive(app_state(request).admin_token, b"botfleet ui csrf v1")
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class OpenedCookie:
    credential: str
    session_id: str
    expires_at: float  # epoch seconds: when the cookie is refused anyway


def _open_cookie(request: Request) -> OpenedCookie | None:
    """A well-formed, unexpired session cookie with a session id, else None (a cookie sealed
    before session ids could not be signed out: it signs in again)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    fernet = _fernet(request)
    try:
        opened = json.loads(fernet.decrypt(cookie.encode(), ttl=SESSION_TTL_S))
        sealed_at = fernet.extract_timestamp(cookie.encode())
    except (InvalidToken, ValueError):
        return None
    if not isinstance(opened, dict):
        return None
    credential, session_id = opened.get("c"), opened.get("s")
    if not (isinstance(credential, str) and credential and isinstance(session_id, str)):
        return None
    return OpenedCookie(credential, session_id, sealed_at + SESSION_TTL_S)


def authenticate(
    request: Request, session: Session, credential: str, *, writes: bool | None = None
) -> UiCaller:
    """The caller a credential stands for, checked exactly as the API checks it: the admin
    token, or an API key through `auth.caller_for_key` (credential cache, revocation, expiry,
    disabled users) and `auth.check_scope` for writes. Raises BotfleetError (401/403)."""
    cookie = request.cookies.get(COOKIE, "")
    state = app_state(request)
    if same(credential, state.admin_token):
        audit.set_request_actor(session, audit.ADMIN)
        return UiCaller(user_id=None, credential=credential, csrf_token=csrf_for(request, cookie))
    caller = auth.caller_for_key(session, state.credentials, token=credential)
    if writes is None:
        writes = request.method not in READ_METHODS
    auth.check_scope(caller, writes=writes)
    state.key_usage.touch(caller.key_id)
    audit.set_request_actor(session, audit.key_actor(caller.key_id))
    return UiCaller(
        user_id=caller.id,
        credential=credential,
        csrf_token=csrf_for(request, cookie),
        key_id=caller.key_id,
        user_name=session.scalar(select(User.name).where(User.id == caller.id)),
    )


async def ui_caller(request: Request, session: SessionDep) -> UiCaller:
    """The signed-in caller; without a valid session, SignInRequired (a 303 to the sign-in
    form). A key revoked or a session signed out since sign-in fails here, on the very next
    request."""
    opened = _open_cookie(request)
    if opened is None or await session_guard.is_signed_out(request, opened.session_id):
        raise SignInRequired
    try:
        caller = await run_in_threadpool(authenticate, request, session, opened.credential)
    except BotfleetError as exc:
        if exc.status_code == 401:
            raise SignInRequired from exc
        raise UiForbidden(exc.message) from exc  # a read-only key writing: a page, not JSON
    request.state.ui_caller = caller
    return caller


UiCallerDep = Annotated[UiCaller, Depends(ui_caller)]


def ui_admin(caller: UiCallerDep) -> UiCaller:
    """The admin; a signed-in user gets a 403 page."""
    if not caller.is_admin:
        raise UiForbidden("this page is for the admin; sign in with the admin token")
    return caller


async def check_csrf(request: Request, caller: UiCallerDep) -> UiCaller:
    """Refuse a state-changing request without the session's CSRF token (403)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.method not in READ_METHODS:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not sent or not same(sent, caller.csrf_token):
        raise UiForbidden("missing or wrong CSRF token: reload the page and try again")
    return caller


#: A dashboard path's API twin, for the rate limiter's buckets: the same budget either way.
_API_METHOD = {"config": "PATCH"}
_LIMITED_WHAT = {"key": "this API key", "bot_command": "commands to this bot"}


async def ui_rate_limit(request: Request) -> None:
    """Spend from the signed-in key's rate-limit buckets, as the API's middleware does for a
    bearer token: the dashboard is no way around the key's budget or a bot's command budget."""
    opened = _open_cookie(request)
    if opened is None:
        return
    state = app_state(request)
    path = request.url.path.removeprefix("/ui") or "/"
    method = request.method
    if method == "POST":
        method = _API_METHOD.get(path.rsplit("/", 1)[-1], method)
    buckets = buckets_for(
        state.settings,
        method=method,
        path=path,
        token=opened.credential,
        admin_token=state.admin_token,
    )
    verdict = await state.rate_limiter.spend(buckets)
    if not verdict.allowed:
        what = _LIMITED_WHAT.get(verdict.kind, "this API key")
        raise UiRateLimited(
            f"too many requests for {what}; retry in {verdict.retry_after_s} s",
            verdict.retry_after_s,
        )


UiAdminDep = Annotated[UiCaller, Depends(ui_admin)]
CsrfCallerDep = Annotated[UiCaller, Depends(check_csrf)]


def set_session_cookie(request: Request, response: object, cookie: str) -> None:
    """HttpOnly, SameSite=Strict, Path=/ui, Secure when the request came over https."""
    response.set_cookie(  # type: ignore[attr-defined]
        COOKIE,
        cookie,
        max_age=SESSION_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: object) -> None:
    response.delete_cookie(  # type: ignore[attr-defined]
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


router = APIRouter()


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", title="Sign in")


@router.post("/sign-in")
async def sign_in(
    request: Request, session: SessionDep, credential: Annotated[str, Form(max_length=512)] = ""
) -> Response:
    """Check the key (or admin token) sent in the form body, then set the session cookie; a
    form from another site, or an address past its wrong sign-ins, is refused unread."""
    foreign = session_guard.cross_origin(request)
    if foreign is not None:
        message = f"{ErrorCode.CROSS_ORIGIN}: {foreign}; sign in from the dashboard's own page"
        return render(request, "error.html", status_code=403, title="Not allowed", message=message)
    wait_s = await session_guard.sign_in_wait_s(request)
    if wait_s:
        message = f"{ErrorCode.TOO_MANY_AUTH_FAILURES}: too many wrong sign-ins from this address; "
        response = render(
            request,
            "sign_in.html",
            status_code=429,
            title="Sign in",
            error=f"{message}retry in {wait_s} s",
        )
        response.headers["Retry-After"] = str(wait_s)
        return response
    credential = credential.strip()
    try:
        if not credential:
            raise BotfleetError(ErrorCode.MISSING_TOKEN, "paste an API key or the admin token")
        await run_in_threadpool(authenticate, request, session, credential, writes=False)
    except BotfleetError as exc:
        await session_guard.count_failed_sign_in(request)
        return render(request, "sign_in.html", status_code=401, title="Sign in", error=exc.message)
    response = RedirectResponse("/ui", status_code=303)
    set_session_cookie(request, response, seal_session(request, credential))
    return secure(response)


@router.post("/sign-out")
async def sign_out(request: Request, caller: CsrfCallerDep) -> Response:
    """Clear the cookie, and record its session as ended: a copy of it is refused from now on,
    on every replica."""
    opened = _open_cookie(request)
    if opened is not None:
        await session_guard.record_sign_out(request, opened.session_id, opened.expires_at)
    response = RedirectResponse("/ui/sign-in", status_code=303)
    clear_session_cookie(request, response)
    return secure(response)
