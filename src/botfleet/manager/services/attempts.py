"""Attempt rows: one per launch, each with its own workload reference and exit code.

Every place that learns a workload ended (the runtime's `exited`, the reconciler's evidence)
stores it through `end_attempt`; what follows (an end or a restart) is decided by
`botfleet.manager.lifecycle.rules`. The runtime's `exited` is kept first (`store_exit_report`)
and ends the attempt only once the engine confirms its workload is gone (`exit_report`,
`pending_exits`: manager/background/exit_watch.py and the reconciler).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from botfleet.manager.core.models import Bot, BotAttempt, utcnow
from botfleet.manager.lifecycle import LIVE, BotStatus, Source
from botfleet.manager.lifecycle.rules import ExitReport, Outcome, next_attempt
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.manager.services.transitions import transition

S = BotStatus


def begin_attempt(session: Session, bot: Bot) -> BotAttempt:
    """Record a launch of the bot's current attempt."""
    row = session.get(BotAttempt, (bot.id, bot.attempt))
    if row is None:
        row = BotAttempt(bot_id=bot.id, attempt=bot.attempt)
        session.add(row)
    row.launched_at = utcnow()
    return row


def list_attempts(
    session: Session, bot_id: str, *, page: PageRequest = PageRequest()
) -> tuple[list[BotAttempt], str | None]:
    """A page of the bot's attempts, oldest first."""
    query = select(BotAttempt).where(BotAttempt.bot_id == bot_id)
    return read_page(session, query, keys=[BotAttempt.attempt], page=page)


def set_attempt_ref(session: Session, bot: Bot, attempt: int, runtime_ref: str) -> None:
    row = session.get(BotAttempt, (bot.id, attempt))
    if row is not None:
        row.runtime_ref = runtime_ref


def record_attempt_exit(
    session: Session, bot_id: str, *, runtime_ref: str, exit_code: int | None
) -> None:
    """The engine's exit code for an attempt, when nobody reported one."""
    row = session.scalar(
        select(BotAttempt).where(BotAttempt.bot_id == bot_id, BotAttempt.runtime_ref == runtime_ref)
    )
    if row is not None and row.exit_code is None:
        row.exit_code = exit_code
        row.ended_at = row.ended_at or utcnow()


@dataclass(frozen=True)
class PendingExit:
    """A live bot's current attempt whose runtime reported `exited`; its workload may run."""

    bot_id: str
    attempt: int
    runtime_ref: str | None
    reported_at: datetime


def store_exit_report(session: Session, bot: Bot, report: ExitReport) -> None:
    """Keep the runtime's `exited` on the bot's current attempt (a locked bot). A retried
    report keeps the first one's time: the exit grace runs from the first."""
    row = session.get(BotAttempt, (bot.id, bot.attempt))
    if row is None:
        row = BotAttempt(bot_id=bot.id, attempt=bot.attempt, runtime_ref=bot.runtime_ref)
        session.add(row)
    row.reported_exit_code, row.reported_reason = report.exit_code, report.reason
    row.reported_detail = report.detail
    row.reported_at = row.reported_at or utcnow()


def exit_report(session: Session, bot: Bot) -> ExitReport | None:
    """The runtime's report on the bot's current attempt, while that attempt has not ended."""
    row = session.get(BotAttempt, (bot.id, bot.attempt))
    if row is None or row.reported_at is None or row.ended_at is not None:
        return None
    code = row.reported_exit_code if row.reported_exit_code is not None else 0
    return ExitReport(code, row.reported_reason, row.reported_detail or "")


def pending_exits(session: Session) -> dict[str, PendingExit]:
    """Every live bot whose current attempt reported `exited` and has not ended, by bot id:
    one query through `ix_bot_attempts_exit_pending` (the few attempts waiting so)."""
    query = (
        select(BotAttempt.bot_id, BotAttempt.attempt, Bot.runtime_ref, BotAttempt.reported_at)
        .join(Bot, Bot.id == BotAttempt.bot_id)
        .where(BotAttempt.reported_at.is_not(None), BotAttempt.ended_at.is_(None))
        .where(Bot.attempt == BotAttempt.attempt, Bot.status.in_([s.value for s in LIVE]))
    )
    return {
        row.bot_id: PendingExit(row.bot_id, row.attempt, row.runtime_ref, row.reported_at)
        for row in session.execute(query)
    }


def end_attempt(session: Session, bot: Bot, outcome: Outcome, *, source: Source) -> BotStatus:
    """Store the end of the bot's current attempt on a locked bot; return its new status.

    The restart policy (`rules.next_attempt`) may send a failed `active` bot back to
    `starting` instead; the relaunch waits for `next_attempt_at` (the timers loop fires it).
    """
    now = utcnow()
    row = session.get(BotAttempt, (bot.id, bot.attempt))
    if row is not None:
        row.exit_code, row.outcome, row.ended_at = outcome.exit_code, outcome.reason, now
    restart = next_attempt(bot, outcome)
    if restart is not None:
        bot.runtime_ref = None
        bot.exit_code = outcome.exit_code
        bot.next_attempt_at = now + timedelta(seconds=restart.delay_s)
        note = f"attempt {bot.attempt} ended ({outcome.reason}, exit {outcome.exit_code}); "
        note += f"attempt {restart.attempt} in {restart.delay_s:g}s"
        transition(session, bot, S.STARTING, reason="restarting", source=source,
                   detail=f"{note}. {outcome.detail}".strip(), at=now)  # fmt: skip
        bot.token_hash = None  # the old attempt's token dies with it
        return S.STARTING
    transition(session, bot, outcome.target, reason=outcome.reason, source=source,
               detail=outcome.detail, exit_code=outcome.exit_code, at=now)  # fmt: skip
    # The last attempt's code, None when nobody knows it yet (the workload pass fills in the
    # engine's); never an earlier attempt's code left over from a restart.
    bot.exit_code = outcome.exit_code
    return outcome.target
