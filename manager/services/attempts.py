"""How an attempt ends: completed, failed, or, under the bot's restart policy, relaunched.

Every place that learns a workload ended (the runtime's `exited`, the reconciler's evidence)
goes through `end_attempt`, so the restart rule lives here once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.lifecycle import BotStatus, Source, transition
from manager.models import Bot, BotAttempt, utcnow

S = BotStatus
MAX_BACKOFF_S = 3600.0


def begin_attempt(session: Session, bot: Bot) -> BotAttempt:
    """Record a launch of the bot's current attempt."""
    row = session.get(BotAttempt, (bot.id, bot.attempt))
    if row is None:
        row = BotAttempt(bot_id=bot.id, attempt=bot.attempt)
        session.add(row)
    row.launched_at = utcnow()
    return row


def list_attempts(session: Session, bot_id: str) -> list[BotAttempt]:
    return list(
        session.scalars(
            select(BotAttempt).where(BotAttempt.bot_id == bot_id).order_by(BotAttempt.attempt)
        )
    )


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


def end_attempt(
    session: Session,
    bot: Bot,
    *,
    failed: bool,
    reason: str,
    source: Source,
    detail: str = "",
    exit_code: int | None = None,
) -> BotStatus:
    """End the bot's current attempt on a locked bot and return the bot's new status.

    A failure of an `active` bot with retries left goes back to `starting` (attempt + 1); the
    relaunch waits an exponential backoff (`next_attempt_at`), done by the reconciler.
    """
    now = utcnow()
    attempt = session.get(BotAttempt, (bot.id, bot.attempt))
    if attempt is not None:
        attempt.exit_code, attempt.outcome, attempt.ended_at = exit_code, reason, now
    restarts_used = max(bot.attempt - 1, 0)
    if failed and bot.status == S.ACTIVE and restarts_used < bot.restart_max_retries:
        delay = min(bot.restart_backoff_s * 2**restarts_used, MAX_BACKOFF_S)
        bot.attempt += 1
        bot.runtime_ref = None
        bot.exit_code = exit_code
        bot.next_attempt_at = now + timedelta(seconds=delay)
        note = f"attempt {bot.attempt - 1} ended ({reason}, exit {exit_code}); "
        note += f"attempt {bot.attempt} in {delay:g}s"
        transition(
            session,
            bot,
            S.STARTING,
            reason="restarting",
            source=source,
            detail=f"{note}. {detail}".strip(),
            at=now,
        )
        bot.token_hash = None  # the old attempt's token dies with it
        return S.STARTING
    target = S.FAILED if failed else S.COMPLETED
    transition(
        session,
        bot,
        target,
        reason=reason,
        source=source,
        detail=detail,
        exit_code=exit_code,
        at=now,
    )
    # The last attempt's code, None when nobody knows it yet (the workload pass fills in the
    # engine's); never an earlier attempt's code left over from a restart.
    bot.exit_code = exit_code
    return target
