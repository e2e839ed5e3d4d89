"""The queue page (`/ui/queue`): the caller's queued bots (the admin's: everyone's) in the order
they will be admitted, each with its `queue_position`, priority and time waited; for the admin,
the capacities too. A keyset page in admission order (higher priority first, then first come)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.queue_models import QUEUED_SQL
from botfleet.manager.http.deps import SessionDep
from botfleet.manager.services import capacities, queue
from botfleet.manager.services.keyset import (
    MAX_CURSOR_CHARS,
    PageRequest,
    decode_cursor,
    encode_cursor,
)
from botfleet.manager.ui.fleet import names_of_users
from botfleet.manager.ui.session import UiCallerDep
from botfleet.manager.ui.templating import render

router = APIRouter()

PAGE_SIZE = 100
#: Priorities go into the cursor shifted to be non-negative (a cursor holds no negative int).
PRIORITY_SHIFT = 2**31


def queue_page(
    session: Session, *, user_id: str | None, page: PageRequest
) -> tuple[list[Bot], str | None]:
    """Queued bots in admission order (`ix_bots_queue`), a keyset page."""
    query = select(Bot).where(text(QUEUED_SQL))
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    if page.cursor:
        shifted, queued_at, last_id = decode_cursor(page.cursor, [int, str, str])
        try:
            since = datetime.fromisoformat(str(queued_at))
        except ValueError as exc:
            raise Invalid(ErrorCode.INVALID_CURSOR, "cursor is not one this page gave") from exc
        priority = int(shifted) - PRIORITY_SHIFT
        later = or_(Bot.queued_at > since, and_(Bot.queued_at == since, Bot.id > str(last_id)))
        query = query.where(or_(Bot.priority < priority, and_(Bot.priority == priority, later)))
    order = (Bot.priority.desc(), Bot.queued_at, Bot.id)
    rows = list(session.scalars(query.order_by(*order).limit(page.limit + 1)))
    if len(rows) <= page.limit:
        return rows, None
    last = rows[page.limit - 1]
    assert last.queued_at is not None
    cursor = encode_cursor([last.priority + PRIORITY_SHIFT, last.queued_at.isoformat(), last.id])
    return rows[: page.limit], cursor


@router.get("/queue")
def queue_view(
    request: Request,
    caller: UiCallerDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> Response:
    error = None
    bots: list[Bot] = []
    next_cursor = None
    try:
        bots, next_cursor = queue_page(
            session, user_id=caller.user_id, page=PageRequest(limit=PAGE_SIZE, cursor=cursor)
        )
    except BotfleetError as exc:
        error = exc.message
    shown = queue.shown(session, bots)
    caps = []
    if caller.is_admin:
        rows, _ = capacities.list_capacities(session, page=PageRequest(limit=PAGE_SIZE))
        used = capacities.usage(session, rows)
        caps = [(row, used[row.id]) for row in rows]
    return render(
        request,
        "queue.html",
        status_code=422 if error else 200,
        title="Queue",
        bots=list(zip(bots, shown, strict=True)),
        names=names_of_users(session, [b.user_id for b in bots]) if caller.is_admin else {},
        capacities=caps,
        total=queue.queued_total(session, user_id=caller.user_id),
        now=utcnow(),
        next_url="/ui/queue?" + urlencode({"cursor": next_cursor}) if next_cursor else "",
        error=error,
    )
