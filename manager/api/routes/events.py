"""`GET /events`: a Server-Sent Events stream of the caller's transitions and command status
changes (an admin sees every bot's). Event ids are the outbox's ids: reconnect with
`Last-Event-ID` to resume exactly after the last event seen, on any replica."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from manager.api.deps import Viewer
from manager.errors import Invalid, error_responses
from manager.events import events_after, latest_event_id
from manager.models import utcnow

router = APIRouter(tags=["events"], responses=error_responses(400, 401, 422))

POLL_S = 2.0  # the fallback when no wake-up arrives
#: PostgreSQL hands out ids before commit, so a lower id can appear after a higher one: a gap
#: younger than this is waited for, an older one is a rolled-back transaction and is skipped.
SETTLE_S = 5.0
#: One SSE event: `id` (the outbox id), `event` (its kind) and `data` (a JSON object).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["transition", "command"]},
        "data": {"type": "string", "description": "the change, as a JSON object"},
    },
}
KEEPALIVE_S = 15.0


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}}},
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
        """Events after `after`, stopping before a gap that may still fill (see SETTLE_S).
        Ids are global, so a gap is judged on all events, not only the viewer's."""
        with sessions() as session:
            rows = events_after(session, after_id=after, user_id=None)
        out, expected = [], after + 1
        settled_before = utcnow() - timedelta(seconds=SETTLE_S)
        for row in rows:
            if row.id != expected and row.at > settled_before:
                break
            expected = row.id + 1
            if viewer.user_id is None or row.user_id == viewer.user_id:
                out.append((row.id, row.kind, row.data))
            else:
                out.append((row.id, "", {}))  # advances the cursor, never sent
        return out

    def newest() -> int:
        with sessions() as session:
            return latest_event_id(session)

    async def stream() -> AsyncIterator[str]:
        after = start if start is not None else await asyncio.to_thread(newest)
        yield ": botfleet events\n\n"
        quiet = 0.0
        while not await request.is_disconnected():
            rows = await asyncio.to_thread(read, after)
            if rows:
                after = rows[-1][0]
            # A batch goes out as one write. Event by event, the writes of a batch would follow
            # one another without the event loop running in between, so it would not see a
            # client that left meanwhile: every later write to the closed socket would log
            # asyncio's "socket.send() raised exception" (hundreds per disconnect). Between
            # batches the loop runs (the read above) and the check above ends the stream.
            chunk = "".join(
                f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
                for event_id, kind, data in rows
                if kind
            )
            if chunk:
                quiet = 0.0
                yield chunk
            if rows:  # more may follow at once
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
