"""The fleet page (`/ui`): the caller's bots (the admin's: everyone's, with a user filter),
counts by status, filters by status and label; and `/ui/events`, the live event stream the
dashboard's pages listen to (the API's `GET /events`, authenticated by the session cookie)."""

from __future__ import annotations

import weakref
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError
from botfleet.manager.core.models import Bot, User
from botfleet.manager.http.deps import AppStateDep, SessionDep
from botfleet.manager.http.routes.events import MAX_EVENT_ID
from botfleet.manager.http.shutdown import client_gone
from botfleet.manager.http.stream_slots import acquire_stream_slot, key_id_for_token
from botfleet.manager.lifecycle.states import BotStatus
from botfleet.manager.messaging.event_feed import EventFeed
from botfleet.manager.messaging.outbox import latest_event_id
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.keyset import MAX_CURSOR_CHARS, PageRequest
from botfleet.manager.ui.session import UiCallerDep
from botfleet.manager.ui.templating import render, secure

router = APIRouter()

PAGE_SIZE = 100
NOTICES = {"deleted": "Bot deleted, with its history and logs."}
STATUSES = [s.value for s in BotStatus]


def count_by_status(session: Session, *, user_id: str | None) -> dict[str, int]:
    """How many bots are in each status (every status present, zeros included)."""
    query = select(Bot.status, func.count()).group_by(Bot.status)
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in session.execute(query):
        counts[str(getattr(status, "value", status))] = n
    return counts


def user_names(session: Session) -> list[tuple[str, str]]:
    """(id, name) of every user, for the admin's user filter."""
    rows = session.execute(select(User.id, User.name).order_by(User.name))
    return [(row.id, row.name) for row in rows]


def fleet_page(
    request: Request,
    caller: UiCallerDep,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "",
    label: Annotated[str, Query(max_length=600)] = "",
    user_id: Annotated[str, Query(max_length=36)] = "",
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    notice: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    owner = (user_id or None) if caller.is_admin else caller.user_id
    events_since = latest_event_id(session)  # before the reads: later changes are streamed
    error = None
    bots: list[Bot] = []
    next_cursor = None
    try:
        labels = bot_records.parse_label_filters([label]) if label.strip() else []
        bots, next_cursor = bot_records.list_bots(
            session,
            user_id=owner,
            statuses=[status] if status else [],
            labels=labels,
            page=PageRequest(limit=PAGE_SIZE, cursor=cursor),
        )
    except BotfleetError as exc:
        error = exc.message
    counts = count_by_status(session, user_id=owner)
    return render(
        request,
        "fleet.html",
        status_code=422 if error else 200,
        title="Fleet",
        bots=bots,
        counts=counts,
        total=sum(counts.values()),
        statuses=STATUSES,
        status=status,
        label=label,
        user_id=user_id,
        users=user_names(session) if caller.is_admin else [],
        next_cursor=next_cursor,
        error=error,
        notice=NOTICES.get(notice),
        events_since=events_since,
    )


@router.get("/events")
async def ui_events(
    request: Request,
    state: AppStateDep,
    caller: UiCallerDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
) -> Response:
    """The caller's events as SSE, exactly as `GET /events` sends them; the browser's
    EventSource resumes after a dropped connection with `Last-Event-ID`. A page starts it
    with `since`, the newest event id when the page was read: nothing between the read and
    the stream's start is missed."""
    start = since
    if last_event_id is not None and last_event_id.isdigit():
        start = min(int(last_event_id), MAX_EVENT_ID)
    slot = acquire_stream_slot(
        key_id_for_token(caller.credential), state.settings.max_streams_per_key
    )
    feed = EventFeed(state.sessions, user_id=caller.user_id)
    body = feed.stream(start, waker=state.event_waker, is_disconnected=client_gone(request))
    held = slot.hold(body)
    weakref.finalize(held, slot.release)  # a client gone before the first step (events.py)
    return secure(
        StreamingResponse(
            held,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    )
