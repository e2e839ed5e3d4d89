"""The queue's admission: queued bots move to `requested`, in priority order then first come,
as capacity frees (a bot ends, a limit or a capacity is raised), and are launched.

Run by the leader's timers loop (`background/timers.py`) every timer interval. Race-free with
parallel POSTs the way `services/queue.py` explains: a pass plans on unlocked counts, then
locks the users' rows (`FOR NO KEY UPDATE`, by id) and the capacities it needs (`FOR UPDATE`,
by id), the order every creator takes them in, counts again, and admits only what still fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

from sqlalchemy import exists, select, text, tuple_
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.models import Bot, BotLabel, User, utcnow
from botfleet.manager.core.queue_models import QUEUED_SQL, Capacity
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.lifecycle.queue_order import Room, Waiting, admissions
from botfleet.manager.lifecycle.states import ADMITTED
from botfleet.manager.services import capacities as caps
from botfleet.manager.services.launcher import Launcher
from botfleet.manager.services.queue import labels_of
from botfleet.manager.services.transitions import transition
from botfleet.manager.services.unit_of_work import after_commit, unit_of_work

#: Queued bots one admission pass considers; a pass that admitted some runs again at once.
ADMIT_BATCH = 200
MAX_PASSES = 10


def admit_waiting(sessions: sessionmaker[Session], launcher: Launcher) -> int:
    """Admit every queued bot that fits now, in order (the timers loop, on the leader);
    returns how many. Each admitted bot is launched once its admission is committed (at its
    `start_at` when that is later)."""
    admitted = 0
    for _ in range(MAX_PASSES):
        count = _admit_once(sessions, launcher)
        admitted += count
        if count == 0:
            break
    return admitted


def _admit_once(sessions: sessionmaker[Session], launcher: Launcher) -> int:
    """One pass: plan on unlocked counts, then lock what the plan needs in the creators' order,
    count again and admit what still fits."""
    with unit_of_work(sessions) as session:
        now = utcnow()
        waiting_users = list(
            session.scalars(
                select(Bot.user_id).where(text(QUEUED_SQL), Bot.queued_at <= now).distinct()
            )
        )
        if not waiting_users:
            return 0
        capacities = caps.all_capacities(session)
        room = caps.room_for(session, waiting_users, capacities)
        plan = admissions(_candidates(session, room, capacities, now), room)
        if not plan:
            return 0
        _lock_users(session, sorted({w.user_id for w in plan}))
        needed = {label for w in plan for label in w.labels}
        caps.lock_capacities(
            session, [c for c in capacities if c.label_pair is None or c.label_pair in needed]
        )
        fresh = caps.room_for(session, sorted({w.user_id for w in plan}), capacities)
        admitted = 0
        for waiting in admissions(plan, fresh):
            bot = session.scalar(
                select(Bot).where(Bot.id == waiting.id).with_for_update(skip_locked=True)
            )
            if bot is None or bot.status != BotStatus.QUEUED:
                continue  # stopped or timed out meanwhile, or being changed now: next pass
            _admit(session, bot, launcher)
            admitted += 1
        return admitted


def _admit(session: Session, bot: Bot, launcher: Launcher) -> None:
    now = utcnow()
    waited = (now - bot.queued_at).total_seconds() if bot.queued_at else 0.0
    transition(session, bot, BotStatus.REQUESTED, reason=ADMITTED, source=Source.SCHEDULER,
               detail=f"waited {waited:.1f}s in the queue")  # fmt: skip
    metrics.QUEUE_WAIT_SECONDS.labels(ADMITTED).observe(max(waited, 0.0))
    if bot.start_at is None or bot.start_at <= now:
        after_commit(session, partial(launcher.submit, launcher.launch, bot.id))


def _lock_users(session: Session, user_ids: Sequence[str]) -> None:
    """The users' rows, in id order, as a creator locks its one (`FOR NO KEY UPDATE`)."""
    session.execute(
        select(User.id)
        .where(User.id.in_(user_ids))
        .order_by(User.id)
        .with_for_update(key_share=True)
    )


def _candidates(
    session: Session, room: Room, capacities: Sequence[Capacity], now: datetime
) -> list[Waiting]:
    """The first queued bots in admission order that no full limit keeps out now."""
    users = sorted(u for u, left in room.users.items() if left > 0)
    if not users or (room.fleet is not None and room.fleet <= 0):
        return []
    query = select(Bot.id, Bot.user_id, Bot.priority, Bot.queued_at).where(
        text(QUEUED_SQL), Bot.queued_at <= now, Bot.user_id.in_(users)
    )
    full = sorted(pair for pair, left in room.labels.items() if left <= 0)
    if full:
        query = query.where(
            ~exists(
                select(BotLabel.bot_id).where(
                    BotLabel.bot_id == Bot.id, tuple_(BotLabel.key, BotLabel.value).in_(full)
                )
            )
        )
    rows = session.execute(
        query.order_by(Bot.priority.desc(), Bot.queued_at, Bot.id).limit(ADMIT_BATCH)
    ).all()
    capped = frozenset(c.label_pair for c in capacities if c.label_pair is not None)
    labels = labels_of(session, [row.id for row in rows], capped)
    return [
        Waiting(row.id, row.user_id, row.priority, row.queued_at, labels.get(row.id, frozenset()))
        for row in rows
    ]
