"""The dashboard's Admin pages (admin token only): users with their limits and usage, a user's
API keys (create, shown once; revoke), and the admin log.

Every change goes through the same service functions as `manager/http/routes/admin.py`, in the
request's one transaction, so the admin log records it exactly as it records an API call.

A new key is shown once without ever entering a URL or being stored in clear: the POST seals it
(`SecretBox`, the key that seals bots' secrets) into a short-lived HttpOnly cookie scoped to the
user's page and redirects there (303); that page opens the cookie, shows the key and deletes
the cookie, so a reload no longer shows it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError
from botfleet.manager.core.models import utcnow
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.schemas.api import ApiKeyCreate, UserCreate, UserUpdate
from botfleet.manager.services import audit, users
from botfleet.manager.services.keyset import MAX_CURSOR_CHARS, MAX_LIMIT, PageRequest
from botfleet.manager.services.user_usage import usage_by_user
from botfleet.manager.ui.fleet import names_of_users
from botfleet.manager.ui.session import UiCaller, check_csrf, ui_admin
from botfleet.manager.ui.templating import render, secure

router = APIRouter(prefix="/admin", dependencies=[Depends(ui_admin)])

AdminCsrf = Annotated[UiCaller, Depends(check_csrf)]
USERS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
NEW_KEY_COOKIE = "botfleet_new_key"
NEW_KEY_TTL = timedelta(minutes=2)
#: Ids are UUIDs: nothing else reaches a query, a redirect or the new-key cookie's path.
IdPath = Annotated[str, Path(min_length=1, max_length=36, pattern=r"^[0-9a-fA-F-]+$")]


class FormError(Exception):
    """A form field the services would refuse, said in the form's own words (422)."""


# ---- users -----------------------------------------------------------------------------------


@router.get("")
def users_page(
    request: Request,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = USERS_PER_PAGE,
) -> Response:
    return _users_page(request, session, page=PageRequest(limit=limit, cursor=cursor))


@router.post("/users")
def create_user(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    name: Annotated[str, Form()] = "",
    max_concurrent_bots: Annotated[str, Form()] = "",
) -> Response:
    try:
        body = UserCreate(name=name.strip(), max_concurrent_bots=_int(max_concurrent_bots))
        limit = body.max_concurrent_bots
        if limit is None:
            limit = app_state(request).settings.default_max_concurrent_bots
        with session.begin_nested():  # a refusal undoes this attempt only: the page still reads
            user, key = users.create_user(session, name=body.name, max_concurrent_bots=limit)
    except (BotfleetError, ValidationError, FormError) as exc:
        return _users_page(request, session, error=_message(exc), status_code=_status(exc))
    return _show_key_once(request, user.id, key_id=None, key=key)


@router.get("/users/{user_id}")
def user_page(request: Request, session: SessionDep, user_id: IdPath) -> Response:
    new_key = _take_new_key(request, user_id)
    response = _user_page(request, session, user_id, new_key=new_key)
    if NEW_KEY_COOKIE in request.cookies:
        response.delete_cookie(NEW_KEY_COOKIE, path=_user_path(user_id), httponly=True)
    return response


@router.post("/users/{user_id}")
def update_user(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    user_id: IdPath,
    max_concurrent_bots: Annotated[str, Form()] = "",
    disabled: Annotated[str, Form()] = "",
) -> Response:
    """Change the limit (when sent), and disable or enable the user (`disabled` 1 or 0)."""
    try:
        body = UserUpdate(
            max_concurrent_bots=_int(max_concurrent_bots),
            disabled={"1": True, "0": False}.get(disabled),
        )
        with session.begin_nested():
            users.update_user(
                session,
                user_id=user_id,
                max_concurrent_bots=body.max_concurrent_bots,
                disabled=body.disabled,
            )
    except (BotfleetError, ValidationError, FormError) as exc:
        return _user_page(request, session, user_id, error=_message(exc), status_code=_status(exc))
    return _redirect(_user_path(user_id))


# ---- keys ------------------------------------------------------------------------------------


@router.post("/users/{user_id}/keys")
def create_key(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    user_id: IdPath,
    name: Annotated[str, Form()] = "",
    scopes: Annotated[str, Form(max_length=100)] = "",
    expires_in_s: Annotated[str, Form()] = "",
) -> Response:
    try:
        body = ApiKeyCreate.model_validate(
            {
                "name": name.strip() or None,
                "scopes": scopes.split(),  # the form's choice: space-separated scopes
                "expires_in_s": _int(expires_in_s),
            }
        )
        with session.begin_nested():
            row, key = users.create_key(
                session,
                user_id,
                name=body.name,
                scopes=body.scopes,
                expires_in_s=body.expires_in_s,
            )
    except (BotfleetError, ValidationError, FormError) as exc:
        return _user_page(request, session, user_id, error=_message(exc), status_code=_status(exc))
    return _show_key_once(request, user_id, key_id=row.id, key=key)


@router.post("/users/{user_id}/keys/{key_id}/revoke")
def revoke_key(
    request: Request, session: SessionDep, _caller: AdminCsrf, user_id: IdPath, key_id: IdPath
) -> Response:
    try:
        with session.begin_nested():
            users.revoke_key(session, user_id=user_id, key_id=key_id)
    except BotfleetError as exc:
        return _user_page(request, session, user_id, error=exc.message, status_code=exc.status_code)
    return _redirect(_user_path(user_id))


# ---- the admin log ---------------------------------------------------------------------------


@router.get("/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    user_id: Annotated[str, Query(max_length=36)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = AUDIT_PER_PAGE,
) -> Response:
    """Admin actions, newest first, filtered like `GET /admin/audit` (user, since), a page at
    a time (`limit`, `cursor`)."""
    context: dict[str, Any] = {"user_id": user_id.strip(), "since": since.strip()}
    try:
        rows, next_cursor = audit.list_admin_actions(
            session,
            user_id=context["user_id"] or None,
            since=_since(context["since"]),
            page=PageRequest(limit=limit, cursor=cursor),
        )
    except (BotfleetError, FormError) as exc:
        return render(
            request,
            "admin_audit.html",
            status_code=_status(exc),
            title="Admin log",
            error=_message(exc),
            entries=[],
            names={},
            next_url=None,
            **context,
        )
    query = {**context, "limit": limit, "cursor": next_cursor}
    next_url = f"/ui/admin/audit?{urlencode(query)}" if next_cursor else None
    return render(
        request,
        "admin_audit.html",
        title="Admin log",
        entries=[
            {"row": row, "change": json.dumps(row.change, sort_keys=True, ensure_ascii=False)}
            for row in rows
        ],
        names=names_of_users(session, (row.user_id for row in rows)),
        next_url=next_url,
        **context,
    )


# ---- helpers ---------------------------------------------------------------------------------


def _users_page(
    request: Request,
    session: Session,
    *,
    page: PageRequest = PageRequest(limit=USERS_PER_PAGE),
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        rows, next_cursor = users.list_users(session, page=page)
    except BotfleetError as exc:  # a cursor this page did not make
        rows, next_cursor = [], None
        error, status_code = exc.message, exc.status_code
    settings = app_state(request).settings
    query = {"limit": page.limit, "cursor": next_cursor}
    next_url = f"/ui/admin?{urlencode(query)}" if next_cursor else None
    return render(
        request,
        "admin.html",
        status_code=status_code,
        title="Admin",
        error=error,
        users=rows,
        usage=usage_by_user(session, [u.id for u in rows]),
        next_url=next_url,
        default_limit=settings.default_max_concurrent_bots,
        rate_limits=_rate_limits(settings),
    )


def _user_page(
    request: Request,
    session: Session,
    user_id: str,
    *,
    new_key: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        user = users.get_user(session, user_id)
    except BotfleetError as exc:
        return render(
            request, "error.html", status_code=exc.status_code, title="No such user",
            message=exc.message,
        )  # fmt: skip
    keys, _ = users.list_keys(session, user_id, page=PageRequest(limit=1000))
    actions, _ = audit.list_admin_actions(session, user_id=user_id, page=PageRequest(limit=10))
    return render(
        request,
        "admin_user.html",
        status_code=status_code,
        title=f"User {user.name}",
        error=error,
        user=user,
        usage=usage_by_user(session, [user.id])[user.id],
        keys=[{"row": k, "scopes": k.scopes.split()} for k in keys],
        actions=actions,
        new_key=new_key,
        now=utcnow(),
        rate_limits=_rate_limits(app_state(request).settings),
        default_restart=(
            json.dumps(user.default_restart, sort_keys=True) if user.default_restart else None
        ),
    )


def _rate_limits(settings: Any) -> dict[str, Any]:
    """The per-key and per-bot rate limits, the same for every user (BOTFLEET_RATE_LIMIT_*)."""
    return {
        "per_s": settings.rate_limit_per_s,
        "burst": settings.rate_limit_burst,
        "bot_command_per_s": settings.bot_command_rate_per_s,
        "bot_command_burst": settings.bot_command_rate_burst,
    }


def _user_path(user_id: str) -> str:
    return f"/ui/admin/users/{user_id}"


def _redirect(path: str) -> Response:
    return secure(RedirectResponse(path, status_code=303))


def _box(request: Request) -> SecretBox:
    return app_state(request).box


def _show_key_once(request: Request, user_id: str, *, key_id: str | None, key: str) -> Response:
    """Redirect to the user's page with the new key sealed in a cookie only that page reads."""
    sealed = _box(request).seal_text(
        json.dumps({"user": user_id, "key_id": key_id, "key": key, "at": utcnow().isoformat()})
    )
    response = _redirect(_user_path(user_id))
    response.set_cookie(
        NEW_KEY_COOKIE,
        sealed,
        max_age=int(NEW_KEY_TTL.total_seconds()),
        path=_user_path(user_id),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _take_new_key(request: Request, user_id: str) -> dict[str, Any] | None:
    """The key created a moment ago for this user, if this browser holds its cookie."""
    sealed = request.cookies.get(NEW_KEY_COOKIE)
    if not sealed:
        return None
    try:
        opened = json.loads(_box(request).open_text(sealed))
        at = datetime.fromisoformat(opened["at"])
    except (SecretsUnreadable, ValueError, KeyError, TypeError):
        return None
    if opened.get("user") != user_id or utcnow() - at > NEW_KEY_TTL:
        return None
    return {"key": opened.get("key"), "key_id": opened.get("key_id")}


def _int(value: str) -> int | None:
    """A form's number field: empty is None."""
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise FormError(f"{value!r} is not a whole number") from exc


def _since(value: str) -> datetime | None:
    """`since` as the form sends it (a local-time field, read as UTC) or an ISO time."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FormError("since must be a time such as 2026-01-01T10:00 (UTC)") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _message(exc: Exception) -> str:
    if isinstance(exc, BotfleetError):
        return exc.message
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def _status(exc: Exception) -> int:
    return exc.status_code if isinstance(exc, BotfleetError) else 422
