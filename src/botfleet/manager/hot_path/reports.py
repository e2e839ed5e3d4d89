"""The report path: a bot's `report` callback, authenticated like a heartbeat, coalesced.

Like a heartbeat it changes no status, so it is authenticated from the process' credential cache
(`manager/hot_path/credentials.py`) without a transaction; unlike a heartbeat its content matters,
so the first report after a quiet interval is written at once (on a worker thread) and only the
ones that follow faster than `BOTFLEET_REPORT_MIN_INTERVAL_S` are coalesced
(`manager/hot_path/report_batches.py`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from botfleet.manager.core.errors import ErrorCode, Unavailable
from botfleet.manager.hot_path.credentials import CredentialCache, known_bot_for_token
from botfleet.manager.hot_path.report_batches import (
    RECEIVED,
    Report,
    ReportBuffer,
    ReportsFull,
    write_reports,
)
from botfleet.manager.lifecycle import LIVE, BotStatus

log = logging.getLogger(__name__)


class Reports:
    def __init__(
        self, sessions: sessionmaker[Session], buffer: ReportBuffer, cache: CredentialCache | None
    ) -> None:
        self.sessions, self.buffer, self.cache = sessions, buffer, cache

    async def accept(self, *, token: str, bot_id: str, data: dict[str, Any]) -> BotStatus:
        """Take one report of `bot_id`; its status as the manager knows it. 401/403 as every
        callback; 503 `reports_full` when too many bots' reports wait (the bot may resend).
        A report of an ended bot is accepted and dropped, like its heartbeat."""
        known, hashed = await known_bot_for_token(
            self.sessions, self.cache, token=token, bot_id=bot_id
        )
        if known.status not in LIVE:
            return known.status
        RECEIVED.inc()
        try:
            now = self.buffer.offer(known.bot_id, hashed, data)
        except ReportsFull:
            raise Unavailable(
                ErrorCode.REPORTS_FULL, "this manager holds as many bots' reports as it may; retry"
            ) from None
        if now is not None:
            await run_in_threadpool(self._write_now, now)
        return known.status

    def _write_now(self, report: Report) -> None:
        try:
            write_reports(self.sessions, [report], now=time.monotonic())
        except Exception as exc:  # the database refused: the next flush tries again
            log.warning("report of bot %s kept for the next flush: %s", report.bot_id, exc)
            self.buffer.restore([report])

    def flush(self, *, everything: bool = False) -> None:
        """Write the coalesced reports whose interval is over (its loop: `manager/app.py`)."""
        due = self.buffer.take_due(everything=everything)
        try:
            write_reports(self.sessions, due, now=time.monotonic())
        except Exception:
            self.buffer.restore(due)
            raise
