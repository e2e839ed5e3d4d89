"""A bot's output followed as it is written: one answer for the API (`GET /bots/{id}/logs?follow=1`)
and the dashboard's live log pane, so both hold a stream slot, cap lines and end the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from botfleet.manager.core.settings import Settings
from botfleet.manager.http.app_state import AppState
from botfleet.manager.http.shutdown import client_gone
from botfleet.manager.http.stream_slots import acquire_stream_slot, key_id_for_token
from botfleet.manager.services import logs as bot_logs
from botfleet.orchestrators.log_tail import LogLimits


def log_limits(settings: Settings) -> LogLimits:
    return LogLimits(settings.log_tail_max_bytes, settings.log_line_max_bytes)


def followed_logs(
    request: Request, source: bot_logs.LogSource, *, state: AppState, tail: int, credential: str
) -> StreamingResponse:
    """The last `tail` lines, then new output until the workload is gone or the client leaves;
    an ended bot's kept lines once. Counts against `credential`'s open streams (429 past
    `BOTFLEET_MAX_STREAMS_PER_KEY`)."""
    limits = log_limits(state.settings)
    orchestrator = state.orchestrator
    slot = acquire_stream_slot(key_id_for_token(credential), state.settings.max_streams_per_key)
    try:
        follower = bot_logs.open_follower(source, orchestrator=orchestrator, tail=tail)
        if follower is None or source.runtime_ref is None:
            kept = bot_logs.read_logs(
                source, orchestrator=orchestrator, sessions=state.sessions, tail=tail, limits=limits
            )
            body = _once(kept + "\n" if kept else "")
        else:
            body = bot_logs.follow(
                follower,
                orchestrator=orchestrator,
                runtime_ref=source.runtime_ref,
                limits=limits,
                is_disconnected=client_gone(request),
            )
    except BaseException:
        slot.release()
        raise
    return StreamingResponse(
        slot.hold(body),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _once(text: str) -> AsyncIterator[bytes]:
    if text:
        yield text.encode()
