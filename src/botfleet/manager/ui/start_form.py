"""The start form (`/ui/bots/new`), drawn from the chosen kind.

A GET form picks the kind (`?bot=<kind>`; without JavaScript its "Choose" button reloads the
page, with it the select submits itself); the start form then shows one field per property of
the kind's config schema, a password field per secret it needs, and image (on a backend of
images), state key, max duration, labels and the restart policy. The submitted form becomes
POST /bots' body and goes through the same service, so the kind's checks are the API's; their
errors are shown beside the field each path points into, the form kept filled, secrets never
written back into the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Forbidden, Invalid
from botfleet.manager.core.settings import Settings
from botfleet.manager.http.deps import BotRequestsDep, SessionDep
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services import kinds
from botfleet.manager.services.kind_checks import KindDoc
from botfleet.manager.ui import kind_forms
from botfleet.manager.ui.kind_forms import FormErrors, FormField, SchemaForm
from botfleet.manager.ui.session import CsrfCallerDep, UiCaller, UiCallerDep
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()

#: Inputs of the form that are not drawn from the kind: the body key each one's errors go to.
FIXED_INPUTS = {
    "bot": "bot",
    "name": "name",
    "start_at": "start_at",
    "labels": "labels",
    "restart": "max_retries",
    "image": "image",
    "state_key": "state_key",
    "max_duration_s": "max_duration_s",
    "config": "config",
}
NOT_KEPT = ("csrf_token",)


async def submitted_form(request: Request, caller: CsrfCallerDep) -> dict[str, str]:
    """The posted form's text fields (after the CSRF check), each bounded as a config is."""
    form = await request.form()
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue
        if len(value) > kind_forms.MAX_FIELD_CHARS or len(key) > 200:
            raise Invalid(ErrorCode.INVALID_INPUT, f"form field {key[:60]!r} is too long")
        values[key] = value
    return values


SubmittedDep = Annotated[dict[str, str], Depends(submitted_form)]


def user_only(caller: UiCaller, what: str) -> str:
    """The API lets only a user's key do this (the admin token may read, stop and delete)."""
    if caller.user_id is None:
        raise Forbidden(
            ErrorCode.USER_KEY_REQUIRED, f"{what} needs a user's API key, not the admin token"
        )
    return caller.user_id


@dataclass(frozen=True)
class StartPage:
    """What the start form offers for the chosen kind."""

    offered: list[str]
    chosen: str
    kind: KindDoc | None
    config: SchemaForm
    secrets: tuple[FormField, ...] = ()
    images: bool = False  # the backend runs images: `image` may be given
    modules: bool = False  # a `module:Class` may be typed (the operator allowed some)
    inputs: list[FormField] = field(default_factory=list)


def start_page(session: Session, settings: Settings, wanted: str) -> StartPage:
    offered = kinds.live_names(session)
    chosen = wanted.strip() or ("demo" if "demo" in offered else (offered[0] if offered else ""))
    kind = kinds.find(session, chosen) if chosen and ":" not in chosen else None
    if kind is not None and kind.retired_at is not None:
        kind = None
    config = kind_forms.schema_form(kind.config_schema if kind else None, "config")
    secrets = kind_forms.secret_fields(list(kind.secrets)) if kind else ()
    return StartPage(
        offered=offered,
        chosen=chosen,
        kind=kind,
        config=config,
        secrets=secrets,
        images=settings.orchestrator != "process",
        modules=bool(settings.allowed_bot_modules),
        inputs=[*config.fields, *secrets],
    )


def _render(
    request: Request,
    page: StartPage,
    values: dict[str, str],
    status_code: int = 200,
    *,
    error: str | None = None,
    errors: dict[str, str] | None = None,
    warning: str | None = None,
) -> Response:
    return render(
        request,
        "start.html",
        status_code,
        title="Start a bot",
        page=page,
        kinds=page.offered,
        form=values,
        errors=errors or {},
        error=error,
        warning=warning,
    )


@router.get("/bots/new")
def start_form(
    request: Request,
    caller: UiCallerDep,
    session: SessionDep,
    bots: BotRequestsDep,
    bot: Annotated[str, Query(max_length=200)] = "",
    ref: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The form for the kind chosen (`?bot=`; `?ref=` a `module:Class` where allowed)."""
    page = start_page(session, bots.settings, ref.strip() or bot)
    values = {"bot": page.chosen, **kind_forms.initial_values(page.inputs)}
    if page.kind is None or page.config.extra:
        values["config"] = "{}"
    return _render(request, page, values)


@router.post("/bots/new")
def start_submit(
    request: Request,
    caller: CsrfCallerDep,
    session: SessionDep,
    bots: BotRequestsDep,
    submitted: SubmittedDep,
) -> Response:
    # Read before the start: a refused start may end the transaction.
    page = start_page(session, bots.settings, submitted.get("bot", ""))
    kept = {k: v for k, v in submitted.items() if k not in NOT_KEPT and not k.startswith("secret.")}
    try:
        user_id = user_only(caller, "starting a bot")
        data = start_request(page, submitted, max_depth=bots.settings.max_json_depth)
        created = bots.start_bot(session, user_id=user_id, data=data)
    except BotfleetError as exc:
        code, message = exc.status_code, exc.message
        shown = kind_forms.errors_by_input(exc, page.inputs, FIXED_INPUTS)
        warning = LABEL_SYNTAX_WARNING if old_label_syntax(kept.get("labels", "")) else None

        def again(request: Request) -> Response:
            return _render(request, page, kept, code, error=message, errors=shown, warning=warning)

        raise ActionRefused(again) from exc
    notice = "started-labels" if old_label_syntax(submitted.get("labels", "")) else "started"
    return secure(RedirectResponse(f"/ui/bots/{created.id}?notice={notice}", status_code=303))


def start_request(page: StartPage, form: dict[str, str], *, max_depth: int) -> BotCreate:
    """The form as POST /bots' body, validated by the same model."""
    errors = FormErrors()
    config = kind_forms.read_fields(page.config, form, errors, max_depth=max_depth)
    secrets = {made.key: form[made.name] for made in page.secrets if form.get(made.name)}
    data: dict[str, Any] = {"bot": form.get("bot", "").strip(), "config": config}
    duration = form.get("max_duration_s", "").strip()
    if duration:
        if not duration.isdigit():
            errors.add("/max_duration_s", "must be a whole number of seconds")
        else:
            data["max_duration_s"] = int(duration)
    errors.raise_if_any(ErrorCode.INVALID_INPUT)
    data["labels"] = _labels(form.get("labels", ""))
    if secrets:
        data["secrets"] = secrets
    for key in ("name", "start_at", "state_key", "image"):
        if form.get(key, "").strip():
            data[key] = form[key].strip()
    restart = _restart(form)
    if restart is not None:
        data["restart"] = restart
    try:
        return BotCreate.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        found = kind_forms.pydantic_errors(exc)
        first = found[0]
        where = first["path"].lstrip("/").replace("/", ".")
        message = f"{where}: {first['message']}" if where else first["message"]
        raise Invalid(ErrorCode.INVALID_INPUT, message, errors=found) from exc


#: Shown after a start whose labels were written `key=value` (the CLI's old syntax).
LABEL_SYNTAX_WARNING = (
    "Labels are written key:value, as in the API and the fleet's filter; "
    "key=value still works, for now."
)


def _label_items(text: str) -> list[tuple[str, str, str]]:
    """(key, separator, value) of each line (or comma-separated item): the separator is the
    first `:` or `=` (a key holds neither; a value may hold both, as a URL does)."""
    items = []
    for line in text.replace(",", "\n").splitlines():
        if not line.strip():
            continue
        at = min((i for i in (line.find(":"), line.find("=")) if i >= 0), default=-1)
        if at < 0 or not line[:at].strip():
            raise Invalid(
                ErrorCode.INVALID_LABELS, f"label {line.strip()!r} must look like key:value"
            )
        items.append((line[:at].strip(), line[at], line[at + 1 :].strip()))
    return items


def _labels(text: str) -> dict[str, str]:
    return {key: value for key, _, value in _label_items(text)}


def old_label_syntax(text: str) -> bool:
    """Some label was written `key=value`: the page says to write `key:value`."""
    try:
        return any(sep == "=" for _, sep, _ in _label_items(text))
    except Invalid:
        return False


def _restart(form: dict[str, str]) -> dict[str, Any] | None:
    retries = form.get("max_retries", "").strip()
    if not retries:
        return None
    if not retries.isdigit():
        raise Invalid(ErrorCode.INVALID_RESTART, "max retries must be a whole number")
    restart: dict[str, Any] = {"max_retries": int(retries)}
    backoff = form.get("backoff_s", "").strip()
    if backoff:
        try:
            restart["backoff_s"] = float(backoff)
        except ValueError as exc:
            raise Invalid(ErrorCode.INVALID_RESTART, "backoff must be a number of seconds") from exc
    on = [t for t in ("crash", "heartbeat_lost", "start_failed") if form.get(f"on_{t}")]
    if on:
        restart["on"] = on
    return restart
