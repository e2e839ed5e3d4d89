"""Attempt rows: one per launch, each with its own workload reference and exit code.

Every place that learns a workload ended (the runtime's `exited`, the reconciler's evidence)
stores it through `end_attempt`; what follows (an end or a restart) is decided by
`botfleet.manager.lifecycle.rules`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from botfleet.manager.core.models import Bot, BotAttempt, utcnow
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.lifecycle.rules import Outcome, next_attempt
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


def end_attempt(session: Session, bot: Bot, outcome: Outcome, *, source: Source) -> BotStatus:
    """Store the end of the bot's current attempt on a locked bot; return its new status.

    The restart policy (`rules.next_attempt`) may send a failed `active` bot back to
    `starting` instead; the relaunch waits for `next_attempt_at`, done by the reconciler.
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
