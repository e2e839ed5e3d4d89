"""The queue: a bot over a limit waits `queued` instead of a 429, and is admitted (`requested`)
in priority order, then first come, as capacity frees.

Race-free the way POST /bots always was (`services/bots.py`, `create_bot`): whoever lets a bot
take a slot locks, in one order, the user's row (`FOR NO KEY UPDATE`), then the capacities it
is under (`FOR UPDATE`, by id), and only then counts the bots holding a slot (READ COMMITTED: a
fresh snapshot per statement, after the previous holder committed). A creator (`place`) and the
admission pass (`admit_waiting`, the leader's timers loop) take the same locks, so parallel
POSTs and admissions never let more bots hold a slot than a limit allows.

The order and the arithmetic are `lifecycle/queue_order.py`'s; this module reads the rows and
the counts, and stores what it decides; the admission pass is `services/queue_admission.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, text, true, tuple_
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import ErrorCode, TooMany
from botfleet.manager.core.models import Bot, BotLabel, utcnow
from botfleet.manager.core.queue_models import QUEUE_TIMEOUT_SQL, QUEUED_SQL, Capacity
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.lifecycle.queue_order import (
    Label,
    Waiting,
    admissions,
    in_line_since,
    positions,
    queue_deadline,
)
from botfleet.manager.lifecycle.states import QUEUE_TIMEOUT
from botfleet.manager.messaging.outbox import record_event
from botfleet.manager.schemas.bots import BotPublic
from botfleet.manager.services import capacities as caps
from botfleet.manager.services.transitions import transition

log = logging.getLogger(__name__)


#: The queued bots in line before a new bot that fits whose claim on its slot is weighed.
AHEAD_CONSIDERED = 200
#: `session.info` key: the positions computed in this transaction (a POST's queued bot: its
#: event's position is its answer's, not counted twice).
_POSITIONS = "botfleet_queue_positions"


@dataclass(frozen=True)
class Full:
    """A limit a new bot would exceed: why it waits (`reason`), or the 429's words."""

    reason: str
    message: str
    limit: int


# ---- a new bot ---------------------------------------------------------------------------------


def place(
    session: Session, bot: Bot, *, limit_now: int, lock_user: Callable[[], int], queue: bool
) -> None:
    """Decide a just-inserted `requested` bot's fate: it keeps its slot; or, over a limit, it
    waits `queued` when `queue` is asked for, else 429 `concurrency_limit` (the whole insert
    rolls back). Only a bot that may take a slot is judged under its user's row lock
    (`lock_user`, which answers the limit as locked), then its capacities': a bot that asks for
    the queue and is over a limit by the committed counts (`limit_now`, the user's as read) waits
    without it, so a burst of queued POSTs is not serialized (it takes no slot: nothing to
    race for; a slot freed meanwhile admits it within a timer interval). With `queue`, a bot
    that fits also waits while an older bot competing for its slots does (first come)."""
    if queue:
        full = _first_full(session, bot, limit_now, caps.applying(session, bot.labels or {}))
        if full is not None:
            enqueue(session, bot, reason=full.reason)
            return
    user_limit = lock_user()
    applying = caps.applying(session, bot.labels or {}, lock=True)
    full = _first_full(session, bot, user_limit, applying)
    if full is None and not (queue and _others_wait(session, bot, applying)):
        return
    if not queue:
        assert full is not None
        raise TooMany(ErrorCode.CONCURRENCY_LIMIT, full.message, limit=full.limit)
    enqueue(session, bot, reason=full.reason if full is not None else "queued_behind")


def _first_full(
    session: Session, bot: Bot, user_limit: int, applying: Sequence[Capacity]
) -> Full | None:
    """The first limit the bot (counted: it is `requested`) is over: its user's, then each
    capacity's; None when it fits them all."""
    held = session.scalar(
        select(func.count())
        .select_from(Bot)
        .where(Bot.user_id == bot.user_id, Bot.status.in_(caps.HOLDING))
    )
    if (held or 0) > user_limit:
        return Full(
            "concurrency_limit",
            f"{(held or 1) - 1} of {user_limit} concurrent bots are running; "
            "stop one or ask for a higher limit",
            user_limit,
        )
    for capacity in applying:
        pair = capacity.label_pair
        if pair is None:
            count, where = caps.holding_fleet(session), "in the fleet"
        else:
            count, where = (
                caps.holding_by_label(session, [pair])[pair],
                f"labelled {pair[0]}:{pair[1]}",
            )
        if count > capacity.max_concurrent:
            return Full(
                "capacity",
                f"{count - 1} of {capacity.max_concurrent} bots {where} are running (a capacity "
                "the admin set); stop one, or start with queue: true to wait for a slot",
                capacity.max_concurrent,
            )
    return None


def _others_wait(session: Session, bot: Bot, applying: Sequence[Capacity]) -> bool:
    """Whether the queued bots in line before a bot that fits (of its priority or higher,
    competing for its slots) would take the slot it found, were they admitted first, as
    the next admission pass will: then it waits behind them (first come)."""
    now = utcnow()
    capacities = caps.all_capacities(session)  # those of the bots ahead too (a few rows)
    mine = _capped(bot.labels or {}, applying)
    rows = session.execute(
        select(Bot.id, Bot.user_id, Bot.priority, Bot.queued_at)
        .where(text(QUEUED_SQL), Bot.queued_at <= now, Bot.priority >= bot.priority)
        .where(_competing(bot.user_id, mine, capacities))
        .order_by(Bot.priority.desc(), Bot.queued_at, Bot.id)
        .limit(AHEAD_CONSIDERED)
    ).all()
    if not rows:
        return False
    capped = frozenset(c.label_pair for c in capacities if c.label_pair is not None)
    labels = labels_of(session, [row.id for row in rows], capped)
    ahead = [
        Waiting(row.id, row.user_id, row.priority, row.queued_at, labels.get(row.id, frozenset()))
        for row in rows
    ]
    newcomer = Waiting(bot.id, bot.user_id, bot.priority, now, mine)
    room = caps.room_for(session, sorted({w.user_id for w in ahead} | {bot.user_id}), capacities)
    room.give(newcomer)  # the counts include it: as it was before it came
    admissions(ahead, room)
    return room.blocker(newcomer) is not None


def enqueue(session: Session, bot: Bot, *, reason: str) -> None:
    """The bot waits: `queued` (its creation, not a transition), in line from now or from its
    `start_at` when later; the event `queued` tells SSE and webhooks (`bot.queued`)."""
    bot.status = BotStatus.QUEUED
    bot.status_reason = reason
    bot.queued_at = in_line_since(utcnow(), bot.start_at)
    session.flush()
    position = positions_of(session, [bot]).get(bot.id)
    session.info.setdefault(_POSITIONS, {})[bot.id] = position  # the answer's, same request
    record_event(
        session,
        bot=bot,
        kind="queued",
        data={
            "bot_id": bot.id,
            "position": position,
            "priority": bot.priority,
            "reason": reason,
            "queued_at": bot.queued_at.isoformat(),
        },
    )


# ---- positions ---------------------------------------------------------------------------------


def _capped(labels: dict[str, str], capacities: Iterable[Capacity]) -> frozenset[Label]:
    """The labels of these that have a capacity."""
    pairs = {c.label_pair for c in capacities if c.label_pair is not None}
    return frozenset(pair for pair in labels.items() if pair in pairs)


def _competing(
    user_ids: str | Sequence[str], capped: Iterable[Label], capacities: Iterable[Capacity]
) -> ColumnElement[bool]:
    """Bots that compete with a bot of `user_ids` carrying `capped` labels: the same user's,
    those with one of those labels, and every bot while a fleet-wide capacity is set."""
    if any(c.label_pair is None for c in capacities):
        return true()
    pairs = sorted(capped)
    users = [user_ids] if isinstance(user_ids, str) else list(user_ids)
    same_user = Bot.user_id.in_(users)
    if not pairs:
        return same_user
    labelled = exists(
        select(BotLabel.bot_id).where(
            BotLabel.bot_id == Bot.id, tuple_(BotLabel.key, BotLabel.value).in_(pairs)
        )
    )
    return or_(same_user, labelled)


def _ahead_of(
    priority: int, queued_at: datetime, bot_id: str, *, inclusive: bool
) -> ColumnElement[bool]:
    """Queued bots before this place in admission order (`inclusive`: or at it)."""
    last = Bot.id <= bot_id if inclusive else Bot.id < bot_id
    same_time = and_(Bot.queued_at == queued_at, last)
    return or_(
        Bot.priority > priority,
        and_(Bot.priority == priority, or_(Bot.queued_at < queued_at, same_time)),
    )


def positions_of(session: Session, bots: Sequence[Bot]) -> dict[str, int]:
    """The `queue_position` of each queued bot among `bots` that is in line (a bot queued for
    a later `start_at` has none until then): 1 + the queued bots ahead of it in admission order
    that compete with it for a slot (`queue_order.positions`). One count for one bot; for a
    page, one read of the queue ahead of its last bot."""
    now = utcnow()
    targets = [
        b for b in bots if b.status == BotStatus.QUEUED and b.queued_at and b.queued_at <= now
    ]
    if not targets:
        return {}
    known = session.info.get(_POSITIONS, {})
    if len(targets) == 1 and targets[0].id in known:
        return {targets[0].id: known[targets[0].id]}
    capacities = caps.all_capacities(session)
    fleet_capped = any(c.label_pair is None for c in capacities)
    if len(targets) == 1:
        (bot,) = targets
        assert bot.queued_at is not None
        ahead = session.scalar(
            select(func.count())
            .select_from(Bot)
            .where(text(QUEUED_SQL), Bot.queued_at <= now)
            .where(_ahead_of(bot.priority, bot.queued_at, bot.id, inclusive=False))
            .where(_competing(bot.user_id, _capped(bot.labels or {}, capacities), capacities))
        )
        return {bot.id: int(ahead or 0) + 1}
    last = max(targets, key=lambda b: (-b.priority, b.queued_at, b.id))
    assert last.queued_at is not None
    capped = [(b, _capped(b.labels or {}, capacities)) for b in targets]
    every_label = frozenset().union(*(labels for _, labels in capped))
    users = sorted({b.user_id for b in targets})
    rows = session.execute(
        select(Bot.id, Bot.user_id, Bot.priority, Bot.queued_at)
        .where(text(QUEUED_SQL), Bot.queued_at <= now)
        .where(_ahead_of(last.priority, last.queued_at, last.id, inclusive=True))
        .where(_competing(users, every_label, capacities))  # each target's, and a few more
    ).all()
    labels = labels_of(session, [row.id for row in rows], every_label)
    queue = [
        Waiting(row.id, row.user_id, row.priority, row.queued_at, labels.get(row.id, frozenset()))
        for row in rows
    ]
    return positions(queue, [b.id for b in targets], fleet_capped=fleet_capped)


def labels_of(
    session: Session, bot_ids: Sequence[str], wanted: frozenset[Label]
) -> dict[str, frozenset[Label]]:
    """Which of the `wanted` labels each of these bots carries."""
    if not wanted or not bot_ids:
        return {}
    found: dict[str, set[Label]] = {}
    for start in range(0, len(bot_ids), 500):
        rows = session.execute(
            select(BotLabel.bot_id, BotLabel.key, BotLabel.value).where(
                BotLabel.bot_id.in_(bot_ids[start : start + 500]),
                tuple_(BotLabel.key, BotLabel.value).in_(sorted(wanted)),
            )
        )
        for bot_id, key, value in rows:
            found.setdefault(bot_id, set()).add((key, value))
    return {bot_id: frozenset(pairs) for bot_id, pairs in found.items()}


def shown(session: Session, bots: Sequence[Bot]) -> list[BotPublic]:
    """The bots as the API shows them, each queued one with its `queue_position`."""
    found = positions_of(session, bots)
    return [
        BotPublic.model_validate(bot).model_copy(update={"queue_position": found.get(bot.id)})
        for bot in bots
    ]


def queued_total(session: Session, *, user_id: str | None = None) -> int:
    """Every queued bot (of `user_id`), in line or waiting for its `start_at`."""
    query = select(func.count()).select_from(Bot).where(text(QUEUED_SQL))
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    return int(session.scalar(query) or 0)


# ---- timeouts --------------------------------------------------------------------------------


def expire_waiting(sessions: sessionmaker[Session]) -> int:
    """Fail the queued bots whose `queue_timeout_s` ran out (`queue_timeout`); returns how
    many. One grouped read of the queue's timeouts (its partial index), then only what is
    due, each under its row lock."""
    now = utcnow()
    due: list[str] = []
    with sessions() as session:
        groups = session.execute(
            select(Bot.queue_timeout_s, func.min(Bot.queued_at))
            .where(text(QUEUE_TIMEOUT_SQL))
            .group_by(Bot.queue_timeout_s)
        ).all()
        for timeout_s, oldest in groups:
            if timeout_s is None or oldest is None or oldest + timedelta(seconds=timeout_s) > now:
                continue
            due += session.scalars(
                select(Bot.id).where(
                    text(QUEUE_TIMEOUT_SQL),
                    Bot.queue_timeout_s == timeout_s,
                    Bot.queued_at <= now - timedelta(seconds=timeout_s),
                )
            )
    return sum(1 for bot_id in due if _expire(sessions, bot_id))


def _expire(sessions: sessionmaker[Session], bot_id: str) -> bool:
    try:
        with transaction(sessions) as session:
            bot = session.scalar(select(Bot).where(Bot.id == bot_id).with_for_update())
            if bot is None or bot.status != BotStatus.QUEUED or bot.queued_at is None:
                return False
            deadline = queue_deadline(bot.queued_at, bot.queue_timeout_s)
            now = utcnow()
            if deadline is None or deadline > now:
                return False
            transition(session, bot, BotStatus.FAILED, reason=QUEUE_TIMEOUT,
                       source=Source.SCHEDULER,
                       detail=f"not admitted within {bot.queue_timeout_s:g}s")  # fmt: skip
        waited = (now - bot.queued_at).total_seconds()
        metrics.QUEUE_WAIT_SECONDS.labels(QUEUE_TIMEOUT).observe(waited)
        metrics.TIMER_LATENESS_SECONDS.labels(QUEUE_TIMEOUT).observe(
            (now - deadline).total_seconds()
        )
        return True
    except Exception:
        log.exception("bot %s: its queue timeout could not be stored", bot_id)
        return False
