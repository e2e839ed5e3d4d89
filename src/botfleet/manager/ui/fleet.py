"""The fleet page (`/ui`): the caller's bots (the admin's: everyone's, with a user filter),
counts by status, filters by status and label, a search by id (the short id the pages show,
or a prefix: the listing's `id_part`); and `/ui/events`, the live event stream the dashboard's
pages listen to (the API's `GET /events`, authenticated by the session cookie)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
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


def names_of_users(session: Session, user_ids: Iterable[str | None]) -> dict[str, str]:
    """{id: name} of these users, for pages that show who (a name says more than an id)."""
    wanted = {i for i in user_ids if i}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
    return {row.id: row.name for row in rows}


def fleet_page(
    request: Request,
    caller: UiCallerDep,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "",
    label: Annotated[str, Query(max_length=600)] = "",
    user_id: Annotated[str, Query(max_length=36)] = "",
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    notice: Annotated[str, Query(max_length=20)] = "",
    id_: Annotated[str, Query(alias="id", max_length=100)] = "",
    live: Annotated[str | None, Header(alias="X-Botfleet-Live", max_length=8)] = None,
) -> Response:
    """`?id=`: a short id or an id's first characters; when exactly one bot matches, its page
    (a search, not a filter: the live refresh of a list that shrank to one stays a list)."""
    owner = (user_id or None) if caller.is_admin else caller.user_id
    id_part = id_.strip()
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
            id_part=id_part or None,
            page=PageRequest(limit=PAGE_SIZE, cursor=cursor),
        )
    except BotfleetError as exc:
        error = exc.message
    if id_part and len(bots) == 1 and cursor is None and live is None:
        return secure(RedirectResponse(f"/ui/bots/{bots[0].id}", status_code=303))
    counts = count_by_status(session, user_id=owner)
    users = user_names(session) if caller.is_admin else []
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
        users=users,
        names=dict(users),
        id_part=id_part,
        next_url=_next_url(status, label, user_id, id_part, next_cursor),
        error=error,
        notice=NOTICES.get(notice),
        events_since=events_since,
    )


def _next_url(status: str, label: str, user_id: str, id_part: str, cursor: str | None) -> str:
    """The next page of the same listing, or "" on the last."""
    if cursor is None:
        return ""
    shown = {"status": status, "label": label, "user_id": user_id, "id": id_part}
    return "/ui?" + urlencode({**{k: v for k, v in shown.items() if v}, "cursor": cursor})


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
