"""The dashboard's Schedules page: the user's schedules (a keyset page), each with its next fire
time in its own zone, its latest outcome, a Pause or Resume button, and its recent bots.

Pause and resume are the API's `PATCH /schedules/{id}` (services/schedules.py); creating and
editing a schedule stay with the API and the CLI (a template is a whole POST /bots body)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from botfleet.manager.core.errors import BotfleetError
from botfleet.manager.core.models import Bot
from botfleet.manager.core.schedule_models import Schedule
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.schemas.schedules import ScheduleUpdate
from botfleet.manager.services import schedules as service
from botfleet.manager.services.keyset import MAX_CURSOR_CHARS, PageRequest
from botfleet.manager.ui.session import CsrfCallerDep, UiCallerDep
from botfleet.manager.ui.start_form import user_only
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()
PAGE_SIZE = 50
#: Bots shown under each schedule (`GET /schedules/{id}/bots` pages through all of them).
RECENT_BOTS = 5


def _page(
    request: Request,
    session: SessionDep,
    user_id: str | None,
    cursor: str | None = None,
    status_code: int = 200,
    **extra: object,
) -> Response:
    rows: list[Schedule] = []
    next_cursor: str | None = None
    if user_id:
        try:
            rows, next_cursor = service.list_schedules(
                session, user_id=user_id, page=PageRequest(limit=PAGE_SIZE, cursor=cursor)
            )
        except BotfleetError as exc:  # a cursor this page did not give
            extra.setdefault("error", exc.message)
    recent = {
        s.id: list(
            session.scalars(
                select(Bot)
                .where(Bot.schedule_id == s.id, Bot.user_id == s.user_id)
                .order_by(Bot.id.desc())
                .limit(RECENT_BOTS)
            )
        )
        for s in rows
    }
    return render(
        request,
        "schedules.html",
        status_code,
        title="Schedules",
        schedules=[service.public(s) for s in rows],
        recent=recent,
        next_url=f"/ui/schedules?cursor={next_cursor}" if next_cursor else "",
        **extra,
    )


@router.get("/schedules")
def schedules_page(
    request: Request,
    session: SessionDep,
    caller: UiCallerDep,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> Response:
    return _page(request, session, caller.user_id, cursor)


@router.post("/schedules/{schedule_id}/pause")
def pause_schedule(
    request: Request, schedule_id: str, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    return _set_paused(request, schedule_id, caller, session, paused=True)


@router.post("/schedules/{schedule_id}/resume")
def resume_schedule(
    request: Request, schedule_id: str, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    return _set_paused(request, schedule_id, caller, session, paused=False)


def _set_paused(
    request: Request, schedule_id: str, caller: UiCallerDep, session: SessionDep, *, paused: bool
) -> Response:
    """PATCH `paused` as the API does; back to the page, which shows the new state."""
    try:
        user_id = user_only(caller, "pausing or resuming a schedule")
        service.update_schedule(
            session,
            schedule_id=schedule_id,
            user_id=user_id,
            patch=ScheduleUpdate(paused=paused),
            requests=app_state(request).bots,
        )
    except BotfleetError as exc:
        message, status_code = exc.message, exc.status_code

        def page(request: Request) -> Response:
            with app_state(request).sessions() as fresh:
                return _page(request, fresh, caller.user_id, None, status_code, error=message)

        raise ActionRefused(page) from exc
    return secure(RedirectResponse("/ui/schedules", status_code=303))
