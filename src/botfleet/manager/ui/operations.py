"""Bulk actions from the fleet page, and an operation's page with its progress.

The fleet page's checkboxes post their bots' ids here with the action (`POST /ui/bots/actions`):
the operation is created by the service `POST /bots/actions` calls, with the same selector
(`{"ids": [...]}`), rules and refusals, and the answer is the operation's page
(`/ui/operations/{id}`), which follows its progress until it is done (static/fleet.js asks for
the page again while it runs) and lists each bot's result, failures first to hand. A user's
key only: the admin token reads and stops bots one at a time."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.schemas.operations import MAX_SELECTOR_IDS, BulkActionCreate
from botfleet.manager.services import operations
from botfleet.manager.services.keyset import PageRequest
from botfleet.manager.ui.session import CsrfCallerDep, UiCallerDep
from botfleet.manager.ui.start_form import user_only
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()

RESULTS_SHOWN = 100
ACTIONS = ("stop", "relaunch", "delete", "command")


def _refused(back: str, exc: BotfleetError) -> ActionRefused:
    """The fleet page again (as the form's `back` listed it), with the API's message."""
    from botfleet.manager.ui import fleet  # the fleet page includes this module's routes

    query = parse_qs(urlsplit(back).query) if back.startswith("/ui") else {}
    kept = {k: v[0] for k, v in query.items() if k in fleet.Listing.__dataclass_fields__}
    shown = fleet.Listing(**kept)

    def page(request: Request) -> Response:
        with app_state(request).sessions() as session:
            caller = request.state.ui_caller
            return fleet.render_fleet(
                request, caller, session, shown, error=exc.message, status_code=exc.status_code
            ).response

    return ActionRefused(page)


def _not_found(request: Request, exc: BotfleetError) -> Response:
    return render(request, "error.html", exc.status_code, title="Not found", message=exc.message)


def bulk_request(action: str, ids: list[str], command: str, payload: str) -> BulkActionCreate:
    """The `POST /bots/actions` body the form stands for (422 as the API words it)."""
    if action not in ACTIONS:
        raise Invalid(ErrorCode.INVALID_INPUT, f"action must be one of: {', '.join(ACTIONS)}")
    if not ids:
        raise Invalid(ErrorCode.EMPTY_SELECTOR, "select the bots to act on first")
    body: dict[str, Any] = {"action": action, "selector": {"ids": ids}}
    if action == "command":
        try:
            parsed = json.loads(payload or "{}")
        except json.JSONDecodeError as exc:
            raise Invalid(ErrorCode.INVALID_JSON, f"payload is not valid JSON: {exc.msg}") from exc
        body["command"] = {"action": command.strip(), "payload": parsed}
    try:
        return BulkActionCreate.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise Invalid(ErrorCode.INVALID_INPUT, f"{where}: {first.get('msg')}") from exc


@router.post("/bots/actions")
def bulk_action(
    request: Request,
    caller: CsrfCallerDep,
    session: SessionDep,
    action: Annotated[str, Form(max_length=16)] = "",
    ids: Annotated[list[str], Form(max_length=MAX_SELECTOR_IDS)] = [],  # noqa: B006
    command: Annotated[str, Form(max_length=64)] = "",
    payload: Annotated[str, Form(max_length=70_000)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/ui",
) -> Response:
    """The checked bots' action, as one operation; its page follows."""
    try:
        user_id = user_only(caller, "a bulk action")
        body = bulk_request(action, ids, command, payload)
        operation = operations.create_operation(session, user_id=user_id, body=body)
    except BotfleetError as exc:
        raise _refused(back, exc) from exc
    return secure(RedirectResponse(f"/ui/operations/{operation.id}", status_code=303))


@router.get("/operations/{operation_id}")
def operation_page(
    request: Request,
    operation_id: str,
    caller: UiCallerDep,
    session: SessionDep,
    failed: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    """The operation's progress and its results (`?failed=1`: the failures only)."""
    try:
        user_id = user_only(caller, "an operation")
        operation = operations.get_operation(session, operation_id[:64], user_id=user_id)
        results, more = operations.list_results(
            session,
            operation.id,
            user_id=user_id,
            ok=False if failed else None,
            page=PageRequest(limit=RESULTS_SHOWN),
        )
    except BotfleetError as exc:
        return _not_found(request, exc)
    return render(
        request,
        "operation.html",
        title=f"Operation {operation.action}",
        operation=operation,
        processed=operation.done + operation.failed,
        results=results,
        more=more is not None,
        failed_only=bool(failed),
    )


@router.post("/operations/{operation_id}/cancel")
def cancel(
    request: Request, operation_id: str, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    """Stop acting on the remaining bots, as `POST /operations/{id}/cancel`."""
    try:
        user_id = user_only(caller, "an operation")
        operation = operations.cancel_operation(session, operation_id[:64], user_id=user_id)
    except BotfleetError as exc:
        return _not_found(request, exc)
    return secure(RedirectResponse(f"/ui/operations/{operation.id}", status_code=303))
