"""A bot's recent output: from its engine while the workload exists, else the lines kept when
it was removed; or followed as it is written.

No database connection is held while the engine or a file is read: `locate_logs` copies what
the read needs out of a short session (the caller closes it), the reads take no session, and
the fallback to the kept lines opens a short one of its own. Every answer is capped
(`orchestrators/log_tail.py`): its cost is its size, never the log's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from botfleet.manager.core.errors import ErrorCode, NotImplementedByBackend, Unavailable
from botfleet.manager.services.bots import get_bot
from botfleet.orchestrators.base import (
    CapabilityNotSupported,
    LogFollower,
    Orchestrator,
    OrchestratorError,
    WorkloadNotFound,
)
from botfleet.orchestrators.log_tail import LineCapper, LogLimits, tail_text

log = logging.getLogger(__name__)

#: A follower with nothing new sleeps this long on the event loop before reading again.
FOLLOW_POLL_S = 0.25
#: How often a quiet follower asks the engine whether the workload still runs.
FOLLOW_CHECK_S = 1.0


def _engine_code(exc: OrchestratorError) -> ErrorCode:
    """The backend's own reason (`backend_unavailable`, ...) as the API's code."""
    try:
        return ErrorCode(exc.code)
    except ValueError:
        return ErrorCode.ORCHESTRATOR_ERROR


@dataclass(frozen=True)
class LogSource:
    """What reading a bot's logs needs, copied out of the session."""

    bot_id: str
    user_id: str
    runtime_ref: str | None


def locate_logs(session: Session, bot_id: str, *, user_id: str | None) -> LogSource:
    """The bot's workload (404 for an unknown or foreign bot; `user_id` None: any user's)."""
    bot = get_bot(session, bot_id, user_id=user_id)
    return LogSource(bot_id=bot.id, user_id=bot.user_id, runtime_ref=bot.runtime_ref)


def kept_logs(
    sessions: sessionmaker[Session], source: LogSource, *, tail: int, limits: LogLimits
) -> str | None:
    """The lines kept on the record when the workload was removed (None: none kept)."""
    with sessions() as session:
        kept = get_bot(session, source.bot_id, user_id=source.user_id).last_logs
    return None if kept is None else tail_text(kept, tail=tail, limits=limits)


def read_logs(
    source: LogSource,
    *,
    orchestrator: Orchestrator,
    sessions: sessionmaker[Session],
    tail: int,
    limits: LogLimits,
) -> str:
    """The last `tail` lines, capped; 501 when the backend keeps no logs, 503 when the engine
    cannot be asked and no lines were kept."""
    if not source.runtime_ref:
        return ""
    try:
        text = orchestrator.logs(source.runtime_ref, bot_id=source.bot_id, tail=tail)
    except CapabilityNotSupported as exc:
        raise NotImplementedByBackend(ErrorCode.NOT_SUPPORTED, str(exc)) from exc
    except OrchestratorError as exc:
        # Removed (or being removed) after it ended: the lines kept before removal.
        kept = kept_logs(sessions, source, tail=tail, limits=limits)
        if kept is None and not isinstance(exc, WorkloadNotFound):
            raise Unavailable(_engine_code(exc), str(exc)) from exc
        return kept or ""
    return tail_text(text, tail=tail, limits=limits)  # whatever the backend did


def open_follower(
    source: LogSource, *, orchestrator: Orchestrator, tail: int
) -> LogFollower | None:
    """A follower of the bot's workload; None when there is no workload to follow (never
    launched, or removed: read its kept lines instead). 501 when the backend cannot follow."""
    if not source.runtime_ref:
        return None
    try:
        return orchestrator.follow_logs(source.runtime_ref, bot_id=source.bot_id, tail=tail)
    except CapabilityNotSupported as exc:
        raise NotImplementedByBackend(ErrorCode.NOT_SUPPORTED, str(exc)) from exc
    except WorkloadNotFound:
        return None
    except OrchestratorError as exc:
        raise Unavailable(_engine_code(exc), str(exc)) from exc


async def follow(
    follower: LogFollower,
    *,
    orchestrator: Orchestrator,
    runtime_ref: str,
    limits: LogLimits,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The followed output, lines capped, until the workload is gone and its output drained,
    or the client leaves. Each read and each engine check runs on a worker thread for its own
    short moment; the waiting happens on the event loop, so a stream holds no thread."""
    capper = LineCapper(limits.line_max_bytes)
    gone = False
    checked = 0.0
    try:
        while True:
            data = await run_in_threadpool(follower.read)
            if data:
                if out := capper.feed(data):
                    yield out
                continue
            if gone or await is_disconnected():
                break
            if time.monotonic() - checked >= FOLLOW_CHECK_S:
                checked = time.monotonic()
                gone = await _workload_gone(orchestrator, runtime_ref)
                if gone:
                    continue  # one more read drains what it wrote last
            await asyncio.sleep(FOLLOW_POLL_S)
        if rest := capper.flush():
            yield rest + b"\n"
    finally:
        await run_in_threadpool(follower.close)


async def _workload_gone(orchestrator: Orchestrator, runtime_ref: str) -> bool:
    """Positive proof only: an engine that cannot be asked keeps the stream open."""
    try:
        status = await run_in_threadpool(orchestrator.inspect, runtime_ref)
    except OrchestratorError as exc:
        log.info("following %s: the engine cannot tell whether it runs: %s", runtime_ref, exc)
        return False
    return status.is_gone
