"""A bot's page (`/ui/bots/{id}`: fields, timeline, commands, report, logs, actions); the start
form (`/ui/bots/new`) is ui/start_form.py.

Every action calls the service the API route calls, in the request's one transaction, so
limits, rules, audit and error messages are the API's. A refused action shows the API's
message on the page, with the API's status code. Actions are POST forms with the session's
CSRF token; they answer with a redirect back to the page (post/redirect/get)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.http.body_guard import refusal
from botfleet.manager.http.deps import AppStateDep, BotRequestsDep, SessionDep, app_state
from botfleet.manager.http.log_follow import followed_logs
from botfleet.manager.messaging.outbox import latest_event_id
from botfleet.manager.schemas.api import CommandCreate
from botfleet.manager.services import attempts, kinds, queue, retention
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services import commands as command_records
from botfleet.manager.services import logs as bot_logs
from botfleet.manager.services.keyset import PageRequest
from botfleet.manager.ui import kind_forms, timeline
from botfleet.manager.ui.command_form import (
    OTHER,
    CommandForm,
    CommandState,
    command_form,
    read_payload,
    refused_state,
    shown_form,
)
from botfleet.manager.ui.session import CsrfCallerDep, UiCaller, UiCallerDep
from botfleet.manager.ui.start_form import LABEL_SYNTAX_WARNING, SubmittedDep, user_only
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()

NOTICES = {
    "started": "Bot started.",
    "started-labels": "Bot started.",
    "stopping": "Stop requested: the bot is asked to leave.",
    "reconfigured": "Reconfigure sent: the bot applies it when it acknowledges.",
    "command": "Command sent: its status and result appear under Commands.",
    "relaunched": "Relaunched as this new bot.",
    "deleted": "Bot deleted.",
}
#: A warning beside the notice: the bot started, but from a form written the old way.
WARNINGS = {"started-labels": LABEL_SYNTAX_WARNING}
LIVE = {"queued", "requested", "starting", "active", "stopping"}


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


def _json_object(text: str, what: str, *, max_depth: int) -> dict[str, Any]:
    """The form field as a JSON object, or the same 422 the API gives for a malformed, too deep
    or non-finite one (the API's body guard never sees a form field)."""
    refused = refusal(text.encode(), max_depth=max_depth)
    if refused is not None:
        raise Invalid(*refused)
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise Invalid(ErrorCode.INVALID_JSON, f"{what} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise Invalid(ErrorCode.INVALID_JSON, f"{what} must be a JSON object")
    return value


# ---- a bot's page ---------------------------------------------------------------------------


def _page(
    request: Request,
    caller: UiCaller,
    session: Session,
    bot_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
    warning: str | None = None,
    command: CommandState | None = None,
) -> Response:
    events_since = latest_event_id(session)  # before the reads: later changes are streamed
    try:
        bot = bot_records.get_bot(session, bot_id, user_id=caller.user_id)
    except BotfleetError as exc:
        return render(
            request, "error.html", exc.status_code, title="Not found", message=exc.message
        )
    moves, _ = bot_records.list_transitions(
        session, bot_id, user_id=caller.user_id, page=PageRequest(limit=1000)
    )
    launches, _ = attempts.list_attempts(session, bot_id, page=PageRequest(limit=1000))
    commands, _ = command_records.list_commands(
        session, bot_id, user_id=caller.user_id, page=PageRequest(limit=25)
    )
    status = _status(bot.status)
    config = command_records.latest_config(session, bot)
    command = command or CommandState()
    drawn = command_form(kinds.kind_of_bot(session, bot), command.chosen)
    values = command.values or kind_forms.initial_values(list(drawn.payload.fields))
    return render(
        request,
        "bot.html",
        status_code,
        title=bot.name or bot_records.short_id(bot.id),
        bot=bot,
        status=status,
        live=status in LIVE,
        config=config,
        transitions=moves,
        timeline=timeline.build(bot.created_at, moves, launches, first=status),
        queue_position=queue.positions_of(session, [bot]).get(bot.id),
        commands=commands,
        command_form=drawn,
        command_values=values,
        command_errors=command.errors,
        error=error,
        notice=notice,
        warning=warning,
        events_since=events_since,
    )


@router.get("/bots/{bot_id}")
def bot_page(
    request: Request,
    bot_id: str,
    caller: UiCallerDep,
    session: SessionDep,
    notice: Annotated[str, Query(max_length=20)] = "",
    command: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """`?command=` chooses the command whose payload form is drawn."""
    shown = CommandState(chosen=command)
    return _page(
        request,
        caller,
        session,
        bot_id,
        notice=NOTICES.get(notice),
        warning=WARNINGS.get(notice),
        command=shown,
    )


def _refused(bot_id: str, exc: BotfleetError, command: CommandState | None = None) -> ActionRefused:
    """The bot's page again, with the API's message and status code, read afresh once the
    refused action's transaction has rolled back (a refused command's form kept filled)."""

    def page(request: Request) -> Response:
        with app_state(request).sessions() as session:
            return _page(
                request,
                request.state.ui_caller,
                session,
                bot_id,
                status_code=exc.status_code,
                error=exc.message,
                command=command,
            )

    return ActionRefused(page)


def _act(bot_id: str, action: Callable[[], str | None], notice: str) -> Response:
    """Run one action; on success back to the page (or the new bot's), else the page with the
    API's message."""
    try:
        target = action()
    except BotfleetError as exc:
        raise _refused(bot_id, exc) from exc
    return secure(RedirectResponse(f"/ui/bots/{target or bot_id}?notice={notice}", status_code=303))


@router.post("/bots/{bot_id}/stop")
def stop(
    request: Request, bot_id: str, caller: CsrfCallerDep, session: SessionDep, bots: BotRequestsDep
) -> Response:
    def run() -> None:
        bots.stop_bot(session, bot_id=bot_id, user_id=caller.user_id)

    return _act(bot_id, run, "stopping")


@router.post("/bots/{bot_id}/config")
def reconfigure(
    request: Request,
    bot_id: str,
    caller: CsrfCallerDep,
    session: SessionDep,
    bots: BotRequestsDep,
    config: Annotated[str, Form(max_length=70_000)] = "",
    mode: Annotated[str, Form(max_length=10)] = "replace",
) -> Response:
    def run() -> None:
        user_id = user_only(caller, "reconfiguring")
        bots.reconfigure(
            session,
            bot_id=bot_id,
            user_id=user_id,
            config=_json_object(config, "config", max_depth=bots.settings.max_json_depth),
            merge=mode == "merge",
        )

    return _act(bot_id, run, "reconfigured")


@router.post("/bots/{bot_id}/commands")
def command(
    request: Request,
    bot_id: str,
    caller: CsrfCallerDep,
    session: SessionDep,
    bots: BotRequestsDep,
    submitted: SubmittedDep,
) -> Response:
    """The command form: a declared command's drawn payload, or any action and a JSON payload;
    refused (by the kind too) → the page again, each error beside its field."""
    shown: CommandForm | None = None
    try:
        user_id = user_only(caller, "sending a command")
        bot = bot_records.get_bot(session, bot_id, user_id=caller.user_id)
        shown = shown_form(kinds.kind_of_bot(session, bot), submitted)
        payload = read_payload(shown, submitted, max_depth=bots.settings.max_json_depth)
        action = submitted.get("action", "").strip()
        try:
            body = CommandCreate.model_validate_json(
                json.dumps({"action": action, "payload": payload})
            )
        except ValidationError as exc:
            raise Invalid(ErrorCode.INVALID_INPUT, _validation_message(exc)) from exc
        bots.send_command(
            session, bot_id=bot_id, user_id=user_id, action=body.action, payload=body.payload
        )
    except BotfleetError as exc:
        raise _refused(bot_id, exc, refused_state(shown, submitted, exc)) from exc
    where = f"&command={quote(shown.chosen or OTHER)}"
    return secure(
        RedirectResponse(f"/ui/bots/{bot_id}?notice=command{where}#command-form", status_code=303)
    )


@router.post("/bots/{bot_id}/relaunch")
def relaunch(
    request: Request, bot_id: str, caller: CsrfCallerDep, session: SessionDep, bots: BotRequestsDep
) -> Response:
    def run() -> str:
        user_id = user_only(caller, "relaunching")
        return str(bots.relaunch_bot(session, bot_id=bot_id, user_id=user_id).id)

    return _act(bot_id, run, "relaunched")


@router.post("/bots/{bot_id}/delete")
def delete(
    request: Request,
    bot_id: str,
    caller: CsrfCallerDep,
    session: SessionDep,
    state: AppStateDep,
    purge_state: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """As `DELETE /bots/{id}` (with `purge_state` when the box is ticked)."""
    try:
        retention.delete_bot_for_user(
            session, state.launcher, bot_id, user_id=caller.user_id, purge_state=bool(purge_state)
        )
    except BotfleetError as exc:
        raise _refused(bot_id, exc) from exc
    return secure(RedirectResponse("/ui?notice=deleted", status_code=303))


@router.get("/bots/{bot_id}/logs")
def logs(
    request: Request,
    bot_id: str,
    caller: UiCallerDep,
    session: SessionDep,
    state: AppStateDep,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    """The bot's output, followed as it is written (as `GET /bots/{id}/logs?follow=1`)."""
    source = bot_logs.locate_logs(session, bot_id, user_id=caller.user_id)
    session.close()
    return secure(
        followed_logs(request, source, state=state, tail=tail, credential=caller.credential)
    )
