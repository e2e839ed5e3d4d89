"""`GET /events`: a Server-Sent Events stream of the caller's transitions, command status
changes, reports, queue entries and schedule firings (an admin sees every bot's). Event ids are
the outbox's ids: reconnect with `Last-Event-ID` to resume exactly after the last event seen, on
any replica. Each key holds at most `BOTFLEET_MAX_STREAMS_PER_KEY` open streams per replica (429
`too_many_streams`)."""

from __future__ import annotations

import weakref
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from botfleet.manager.core.errors import ErrorCode, Invalid, error_responses
from botfleet.manager.core.secrets import bearer_token
from botfleet.manager.http.deps import AppStateDep, Viewer
from botfleet.manager.http.shutdown import client_gone
from botfleet.manager.http.stream_slots import acquire_stream_slot, key_id_for_token
from botfleet.manager.messaging.event_feed import EventFeed

#: Event ids are 64-bit integers in the database; a larger one cannot be an id we sent.
MAX_EVENT_ID = 2**63 - 1

router = APIRouter(tags=["events"], responses=error_responses(400, 401, 422, 429))

#: One SSE event: `id` (the outbox id), `event` (its kind) and `data` (a JSON object).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": ["transition", "command", "report", "queued", "schedule"],
        },
        "data": {"type": "string", "description": "the change, as a JSON object"},
    },
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}}},
)
async def stream_events(
    request: Request,
    state: AppStateDep,
    viewer: Viewer,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="Same as Last-Event-ID.")
    ] = None,
) -> StreamingResponse:
    if last_event_id is not None and not (
        last_event_id.isdigit() and int(last_event_id) <= MAX_EVENT_ID
    ):
        raise Invalid(ErrorCode.INVALID_LAST_EVENT_ID, "Last-Event-ID must be an event id we sent")
    start = int(last_event_id) if last_event_id is not None else since
    # `viewer` has checked the token: counting by its digest counts per key (or admin token).
    token = bearer_token(request.headers.get("authorization")) or ""
    slot = acquire_stream_slot(key_id_for_token(token), state.settings.max_streams_per_key)
    feed = EventFeed(state.sessions, user_id=viewer.user_id)
    body = feed.stream(start, waker=state.event_waker, is_disconnected=client_gone(request))
    held = slot.hold(body)
    # A client gone before the body's first step never runs its `finally`: the slot is then
    # freed when the unstarted body is collected (release is idempotent).
    weakref.finalize(held, slot.release)
    return StreamingResponse(
        held,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
