"""The dashboard's Kinds pages (admin token only): every kind with its latest version and live
bots, a kind's versions and document, and the forms to register a kind, register a new version
(running bots keep theirs) and retire one.

A kind is registered as the API takes it: its JSON document, typed (or pasted) into a textarea
or uploaded as a file. Every change goes through `services/kinds.py`, as `POST`, `PUT` and
`DELETE /admin/kinds` do, in the request's one transaction, so the admin log records it the
same way; a refusal is shown with the API's code and each `{path, message}` it carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.core.kind_models import Kind
from botfleet.manager.core.models import Bot
from botfleet.manager.http.body_guard import refusal
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.lifecycle.states import LIVE
from botfleet.manager.schemas.kinds import KIND_NAME, KindCreate, KindDefinition
from botfleet.manager.services import kinds
from botfleet.manager.services.builtin_kinds import BUILTIN_KINDS
from botfleet.manager.services.kind_checks import KindDoc
from botfleet.manager.ui import session_guard
from botfleet.manager.ui.kind_forms import pydantic_errors
from botfleet.manager.ui.session import UiCaller, UiForbidden, check_csrf, ui_admin
from botfleet.manager.ui.templating import render, secure

Body = TypeVar("Body", bound=KindDefinition)
router = APIRouter(prefix="/admin/kinds", dependencies=[Depends(ui_admin)])

#: The page lists this many kinds at most (kinds are few; the API pages through them all).
MAX_LISTED = 500
#: A document as typed: pretty JSON of a kind at its largest (256 KiB compact) fits.
MAX_DOCUMENT_CHARS = 1024 * 1024
NamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=KIND_NAME.pattern)]
DOCUMENT_KEYS = (
    "run", "image", "package", "config_schema", "secrets", "commands", "resources", "placement",
    "restart", "health", "description",
)  # fmt: skip


def _csrf_same_origin(
    request: Request, caller: Annotated[UiCaller, Depends(check_csrf)]
) -> UiCaller:
    """The CSRF token, and a browser's form posted from this dashboard only (as sign-in is)."""
    foreign = session_guard.cross_origin(request)
    if foreign is not None:
        raise UiForbidden(f"{ErrorCode.CROSS_ORIGIN.value}: {foreign}")
    return caller


AdminCsrf = Annotated[UiCaller, Depends(_csrf_same_origin)]


@dataclass(frozen=True)
class Refusal:
    """A refusal as the API words it: status, code, message and its `[{path, message}]`."""

    status: int
    code: str
    message: str
    errors: list[dict[str, str]]


def _refusal(exc: BotfleetError) -> Refusal:
    errors = [
        {"path": str(e.get("path", "")), "message": str(e.get("message", ""))}
        for e in exc.extra.get("errors") or ()
        if isinstance(e, dict)
    ]
    return Refusal(exc.status_code, exc.code.value, exc.message, errors)


# ---- pages -----------------------------------------------------------------------------------


@router.get("")
def kinds_page(request: Request, session: SessionDep) -> Response:
    return _kinds_page(request, session)


@router.post("")
def register_kind(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    document: Annotated[str, Form(max_length=MAX_DOCUMENT_CHARS)] = "",
    document_file: UploadFile | None = None,
) -> Response:
    """Version 1 of a new kind from the textarea, or from the uploaded file when one is sent."""
    text = document
    try:
        if document_file is not None and document_file.filename:
            text = _uploaded(document_file)
        body = _body(request, text, KindCreate)
        with session.begin_nested():  # a refusal undoes this attempt only: the page still reads
            made = kinds.register(session, body, limits=app_state(request).bots.limits)
    except BotfleetError as exc:
        return _kinds_page(request, session, refused=_refusal(exc), document=text)
    return _redirect(f"/ui/admin/kinds/{made.name}?notice=registered")


@router.get("/{name}")
def kind_page(
    request: Request,
    session: SessionDep,
    name: NamePath,
    version: Annotated[int | None, Query(ge=1)] = None,
    notice: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    shown = {"registered": "Kind registered.", "updated": "New version registered.",
             "retired": "Kind retired: no new bots of it start."}.get(notice)  # fmt: skip
    return _kind_page(request, session, name, version=version, notice=shown)


@router.post("/{name}/versions")
def new_version(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    name: NamePath,
    document: Annotated[str, Form(max_length=MAX_DOCUMENT_CHARS)] = "",
) -> Response:
    """The next version of the kind (a retired one comes back); running bots keep theirs."""
    try:
        body = _body(request, document, KindDefinition, name=name)
        with session.begin_nested():
            kinds.update_kind(session, name, body, limits=app_state(request).bots.limits)
    except BotfleetError as exc:
        return _kind_page(request, session, name, refused=_refusal(exc), document=document)
    return _redirect(f"/ui/admin/kinds/{name}?notice=updated")


@router.post("/{name}/retire")
def retire_kind(
    request: Request,
    session: SessionDep,
    _caller: AdminCsrf,
    name: NamePath,
    confirm: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Retire the kind once its name is typed again (the confirmation)."""
    try:
        if confirm.strip() != name:
            raise Invalid(
                ErrorCode.INVALID_INPUT,
                f"confirm: type the kind's name ({name}) to retire it",
                errors=[{"path": "/confirm", "message": "must be the kind's name"}],
            )
        with session.begin_nested():
            kinds.retire(session, name)
    except BotfleetError as exc:
        return _kind_page(request, session, name, refused=_refusal(exc))
    return _redirect(f"/ui/admin/kinds/{name}?notice=retired")


# ---- reading a form --------------------------------------------------------------------------


def _uploaded(upload: UploadFile) -> str:
    data = upload.file.read(MAX_DOCUMENT_CHARS + 1)
    if len(data) > MAX_DOCUMENT_CHARS:
        raise Invalid(
            ErrorCode.INVALID_INPUT, f"the file is larger than {MAX_DOCUMENT_CHARS} bytes"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(ErrorCode.INVALID_JSON, "the file is not UTF-8 text") from exc


def _body(request: Request, text: str, model: type[Body], *, name: str | None = None) -> Body:
    """The document as the API's body, refused as the API refuses it (depth, JSON, fields)."""
    if not text.strip():
        raise Invalid(ErrorCode.INVALID_INPUT, "body: the kind's JSON document is empty")
    refused = refusal(text.encode(), max_depth=app_state(request).settings.max_json_depth)
    if refused is not None:
        raise Invalid(refused[0], refused[1])
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(
            ErrorCode.INVALID_JSON,
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            line=exc.lineno,
            column=exc.colno,
        ) from exc
    if name is not None and isinstance(parsed, dict) and parsed.get("name") == name:
        parsed.pop("name")  # the kind's page shows its name: pasting a whole document is fine
        text = json.dumps(parsed)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        found = pydantic_errors(exc)
        where = found[0]["path"].lstrip("/").replace("/", ".") or "body"
        raise Invalid(
            ErrorCode.INVALID_INPUT, f"{where}: {found[0]['message']}", errors=found
        ) from exc


# ---- rendering -------------------------------------------------------------------------------


def _document(kind: KindDoc) -> dict[str, Any]:
    """A version's document as `PUT /admin/kinds/{name}` takes it (unset parts left out)."""
    doc: dict[str, Any] = {
        "run": dict(kind.run),
        "image": kind.image,
        "package": kind.package,
        "config_schema": kind.config_schema,
        "secrets": list(kind.secrets),
        "commands": kind.commands,
        "resources": kind.resources,
        "placement": kind.placement,
        "restart": kind.restart,
        "health": list(kind.health) if kind.health else None,
        "description": kind.description,
    }
    return {k: doc[k] for k in DOCUMENT_KEYS if doc[k] is not None}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def _live_bots(session: Session, names: list[str]) -> dict[tuple[str, int | None], int]:
    """Live bots of these kinds by (kind, version): one grouped read."""
    if not names:
        return {}
    rows = session.execute(
        select(Bot.bot, Bot.kind_version, func.count())
        .where(Bot.bot.in_(names), Bot.status.in_([s.value for s in LIVE]))
        .group_by(Bot.bot, Bot.kind_version)
    )
    return {(bot, version): int(count) for bot, version, count in rows}


def _latest_rows(session: Session) -> list[Kind]:
    newest = (
        select(Kind.name, func.max(Kind.version).label("version")).group_by(Kind.name).subquery()
    )
    query = (
        select(Kind)
        .join(newest, (Kind.name == newest.c.name) & (Kind.version == newest.c.version))
        .order_by(Kind.name)
        .limit(MAX_LISTED)
    )
    return list(session.scalars(query))


def _kinds_page(
    request: Request,
    session: Session,
    *,
    refused: Refusal | None = None,
    document: str = "",
) -> Response:
    listed = [*BUILTIN_KINDS.values(), *(kinds.doc_of(row) for row in _latest_rows(session))]
    listed.sort(key=lambda k: k.name)
    live = _live_bots(session, [k.name for k in listed])
    rows = []
    for kind in listed:
        by_version = sorted(
            ((v, n) for (name, v), n in live.items() if name == kind.name),
            key=lambda item: item[0] or 0,
        )
        rows.append({"kind": kind, "live": by_version, "live_total": sum(n for _, n in by_version)})
    return render(
        request,
        "admin_kinds.html",
        status_code=refused.status if refused else 200,
        title="Kinds",
        refused=refused,
        rows=rows,
        truncated=len(listed) - len(BUILTIN_KINDS) >= MAX_LISTED,
        document=document,
    )


def _kind_page(
    request: Request,
    session: Session,
    name: str,
    *,
    version: int | None = None,
    refused: Refusal | None = None,
    document: str | None = None,
    notice: str | None = None,
) -> Response:
    builtin = BUILTIN_KINDS.get(name)
    if builtin is not None:
        versions = [builtin]
    else:
        query = select(Kind).where(Kind.name == name).order_by(Kind.version.desc())
        versions = [kinds.doc_of(row) for row in session.scalars(query)]
    chosen = next((k for k in versions if version is None or k.version == version), None)
    if chosen is None:
        which = f" version {version}" if version is not None and versions else ""
        message = f"{ErrorCode.KIND_NOT_FOUND.value}: no kind {name!r}{which}"
        return render(request, "error.html", status_code=404, title="No such kind", message=message)
    latest = versions[0]
    live = _live_bots(session, [name])
    return render(
        request,
        "admin_kind.html",
        status_code=refused.status if refused else 200,
        title=f"Kind {name}",
        notice=notice,
        refused=refused,
        kind=chosen,
        latest=latest,
        versions=[{"kind": k, "live": live.get((name, k.version), 0)} for k in versions],
        live_unversioned=live.get((name, None), 0),
        shown_document=_pretty(_document(chosen)),
        document=document if document is not None else _pretty(_document(latest)),
    )


def _redirect(path: str) -> Response:
    return secure(RedirectResponse(path, status_code=303))
