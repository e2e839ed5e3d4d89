"""`GET /events`: a Server-Sent Events stream of the caller's transitions and command status
changes (an admin sees every bot's). Event ids are the outbox's ids: reconnect with
`Last-Event-ID` to resume exactly after the last event seen, on any replica."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from manager.api.deps import Viewer
from manager.errors import Invalid, error_responses
from manager.events import events_after, latest_event_id

router = APIRouter(tags=["events"], responses=error_responses(400, 401, 422))

POLL_S = 2.0  # the fallback when no wake-up arrives
KEEPALIVE_S = 15.0


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def stream_events(
    request: Request,
    viewer: Viewer,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    since: Annotated[int | None, Query(ge=0, description="Same as Last-Event-ID.")] = None,
) -> StreamingResponse:
    sessions = request.app.state.sessions
    if last_event_id is not None and not last_event_id.isdigit():
        raise Invalid("invalid_last_event_id", "Last-Event-ID must be an event id we sent")
    start = int(last_event_id) if last_event_id is not None else since

    def read(after: int) -> list[tuple[int, str, dict[str, object]]]:
        with sessions() as session:
            rows = events_after(session, after_id=after, user_id=viewer.user_id)
            return [(row.id, row.kind, row.data) for row in rows]

    def newest() -> int:
        with sessions() as session:
            return latest_event_id(session)

    async def stream() -> AsyncIterator[str]:
        after = start if start is not None else await asyncio.to_thread(newest)
        yield ": botfleet events\n\n"
        quiet = 0.0
        while not await request.is_disconnected():
            rows = await asyncio.to_thread(read, after)
            for event_id, kind, data in rows:
                after = event_id
                yield f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
            if rows:
                quiet = 0.0
                continue
            await request.app.state.event_waker.wait(POLL_S)
            quiet += POLL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
