"""The fleet page (`/ui`): the caller's bots (the admin's: everyone's, with a user filter),
counts by status, filters by status and label, a search by id (the short id the pages show,
or a prefix: the listing's `id_part`) or by name (a prefix, any case), an order (newest,
oldest, name, status, last heartbeat; each a keyset page), the last heartbeat of each bot, and
checkboxes whose bots a bulk action acts on (ui/operations.py); and `/ui/events`, the live event
stream the dashboard's pages listen to (the API's `GET /events`, authenticated by the session
cookie)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Query, Request
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
from botfleet.manager.services import bot_listing
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.keyset import MAX_CURSOR_CHARS, PageRequest
from botfleet.manager.ui import operations
from botfleet.manager.ui.session import UiCaller, UiCallerDep
from botfleet.manager.ui.templating import render, secure

router = APIRouter()
router.include_router(operations.router)

PAGE_SIZE = 100
NOTICES = {"deleted": "Bot deleted, with its history and logs."}
STATUSES = [s.value for s in BotStatus]
#: The orders the page offers, as the sort box names them.
SORT_CHOICES = {
    "-created": "newest first",
    "created": "oldest first",
    "name": "name A to Z",
    "-name": "name Z to A",
    "status": "status",
    "-heartbeat": "last heartbeat, latest first",
    "heartbeat": "last heartbeat, oldest first",
}


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


@dataclass(frozen=True)
class Listing:
    """What the fleet page lists: its filters, search, order and page, as the URL says."""

    status: str = ""
    label: str = ""
    user_id: str = ""
    id: str = ""
    name: str = ""
    sort: str = ""
    cursor: str | None = None

    def url(self, cursor: str | None) -> str:
        """This listing at another page (the same filters and order)."""
        shown = {k: v for k, v in asdict(self).items() if v and k != "cursor"}
        if cursor:
            shown["cursor"] = cursor
        return "/ui?" + urlencode(shown) if shown else "/ui"


def listing(
    status: Annotated[str, Query(max_length=20)] = "",
    label: Annotated[str, Query(max_length=600)] = "",
    user_id: Annotated[str, Query(max_length=36)] = "",
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    id_: Annotated[str, Query(alias="id", max_length=100)] = "",
    name: Annotated[str, Query(max_length=200)] = "",
    sort: Annotated[str, Query(max_length=16)] = "",
) -> Listing:
    return Listing(status, label, user_id, id_.strip(), name.strip(), sort, cursor)


ListingDep = Annotated[Listing, Depends(listing)]


def fleet_page(
    request: Request,
    caller: UiCallerDep,
    session: SessionDep,
    shown: ListingDep,
    notice: Annotated[str, Query(max_length=20)] = "",
    live: Annotated[str | None, Header(alias="X-Botfleet-Live", max_length=8)] = None,
) -> Response:
    """`?id=`: a short id or an id's first characters; when exactly one bot matches, its page
    (a search, not a filter: the live refresh of a list that shrank to one stays a list)."""
    page = render_fleet(request, caller, session, shown, notice=NOTICES.get(notice))
    bots = page.bots
    if shown.id and len(bots) == 1 and shown.cursor is None and live is None and not page.error:
        return secure(RedirectResponse(f"/ui/bots/{bots[0].id}", status_code=303))
    return page.response


@dataclass
class FleetPage:
    response: Response
    bots: list[Bot]
    error: str | None


def render_fleet(
    request: Request,
    caller: UiCaller,
    session: Session,
    shown: Listing,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> FleetPage:
    """The fleet page for this listing (`error`: an action's refusal, shown above it)."""
    owner = (shown.user_id or None) if caller.is_admin else caller.user_id
    events_since = latest_event_id(session)  # before the reads: later changes are streamed
    bots: list[Bot] = []
    next_cursor = None
    try:
        labels = bot_records.parse_label_filters([shown.label]) if shown.label.strip() else []
        bots, next_cursor = bot_records.list_bots(
            session,
            user_id=owner,
            statuses=[shown.status] if shown.status else [],
            labels=labels,
            id_part=shown.id or None,
            name_prefix=shown.name or None,
            sort=shown.sort or bot_listing.DEFAULT_SORT,
            page=PageRequest(limit=PAGE_SIZE, cursor=shown.cursor),
        )
    except BotfleetError as exc:
        error, status_code = exc.message, exc.status_code
    counts = count_by_status(session, user_id=owner)
    users = user_names(session) if caller.is_admin else []
    response = render(
        request,
        "fleet.html",
        status_code=status_code,
        title="Fleet",
        bots=bots,
        counts=counts,
        total=sum(counts.values()),
        statuses=STATUSES,
        shown=shown,
        status=shown.status,
        label=shown.label,
        user_id=shown.user_id,
        users=users,
        names=dict(users),
        id_part=shown.id,
        sorts=SORT_CHOICES,
        here=shown.url(shown.cursor),
        next_url=shown.url(next_cursor) if next_cursor else "",
        error=error,
        notice=notice,
        events_since=events_since,
    )
    return FleetPage(response, bots, error)


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
