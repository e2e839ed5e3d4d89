"""Schedules: start bots from a template on a cron expression in a time zone (CONTRACT v3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import BotRequestsDep, CurrentUser, SessionDep
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.bots import BotPublic
from botfleet.manager.schemas.list_page import Page
from botfleet.manager.schemas.schedules import (
    FiringPublic,
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
)
from botfleet.manager.services import schedules as service

router = APIRouter(
    prefix="/schedules",
    tags=["schedules"],
    responses=error_responses(400, 401, 403, 404, 413, 422, 503),
)
SchedulePath = Annotated[str, Path(max_length=64)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SchedulePublic)
def create_schedule(
    body: ScheduleCreate, user: CurrentUser, session: SessionDep, bots: BotRequestsDep
) -> SchedulePublic:
    """A schedule that starts a bot from `template` at each fire time of `cron` in `timezone`.
    422 `invalid_cron`, `cron_too_frequent`, `unknown_timezone`, or what POST /bots would answer
    for the template (`invalid_config`, `unknown_bot`, …); limits are judged at fire time."""
    schedule = service.create_schedule(session, user_id=user.id, data=body, requests=bots)
    return service.public(schedule)


@router.get("", response_model=Page[SchedulePublic])
def list_schedules(session: SessionDep, user: CurrentUser, page: PageQuery) -> Page[SchedulePublic]:
    """Your schedules, newest first, a page at a time."""
    rows, next_cursor = service.list_schedules(session, user_id=user.id, page=page)
    return Page(items=[service.public(s) for s in rows], next_cursor=next_cursor)


@router.get("/{schedule_id}", response_model=SchedulePublic)
def get_schedule(
    schedule_id: SchedulePath, session: SessionDep, user: CurrentUser
) -> SchedulePublic:
    """The schedule, with its next fire time and its latest firing's outcome."""
    return service.public(service.get_schedule(session, schedule_id, user_id=user.id))


@router.patch("/{schedule_id}", response_model=SchedulePublic)
def update_schedule(
    schedule_id: SchedulePath,
    body: ScheduleUpdate,
    user: CurrentUser,
    session: SessionDep,
    bots: BotRequestsDep,
) -> SchedulePublic:
    """Change any field; `{"paused": true}` pauses, `{"paused": false}` resumes from the next
    fire time after now. `duration_s` and `window_end` take null to clear them."""
    schedule = service.update_schedule(
        session, schedule_id=schedule_id, user_id=user.id, patch=body, requests=bots
    )
    return service.public(schedule)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_schedule(schedule_id: SchedulePath, session: SessionDep, user: CurrentUser) -> Response:
    """Delete the schedule and its history: 204. Its bots stay, with `schedule_id`, and are
    still stopped at their duration or window's end."""
    service.delete_schedule(session, schedule_id, user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{schedule_id}/bots", response_model=Page[BotPublic])
def list_schedule_bots(
    schedule_id: SchedulePath, session: SessionDep, user: CurrentUser, page: PageQuery
) -> Page[BotPublic]:
    """The bots the schedule started, newest first, a page at a time."""
    rows, next_cursor = service.list_schedule_bots(session, schedule_id, user_id=user.id, page=page)
    return Page(items=[BotPublic.model_validate(b) for b in rows], next_cursor=next_cursor)


@router.get("/{schedule_id}/firings", response_model=Page[FiringPublic])
def list_schedule_firings(
    schedule_id: SchedulePath, session: SessionDep, user: CurrentUser, page: PageQuery
) -> Page[FiringPublic]:
    """Each fire time, newest first: the bot it started, or why none (`skipped`, `failed` with
    POST /bots' error code, `missed`). The latest 100 are kept."""
    rows, next_cursor = service.list_firings(session, schedule_id, user_id=user.id, page=page)
    return Page(items=[FiringPublic.model_validate(f) for f in rows], next_cursor=next_cursor)
