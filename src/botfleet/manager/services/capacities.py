"""Capacities an admin sets (`/admin/capacities`): fleet-wide, or per label, at most
`max_concurrent` bots holding a slot (a limit of 0 lets none). Every change is audited.

The counts here are what POST /bots and the queue's admission compare with each capacity:
bots in `HOLDS_CAPACITY` (live and not queued), fleet-wide or carrying the label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, NotFound
from botfleet.manager.core.models import Bot, BotLabel, User, utcnow
from botfleet.manager.core.queue_models import FLEET_SCOPE, Capacity, label_scope
from botfleet.manager.lifecycle import HOLDS_CAPACITY, BotStatus
from botfleet.manager.lifecycle.queue_order import Room
from botfleet.manager.services import audit
from botfleet.manager.services.keyset import PageRequest, read_page

HOLDING = [s.value for s in HOLDS_CAPACITY]
CAPACITY_SET = "capacity_set"
CAPACITY_REMOVED = "capacity_removed"

Label = tuple[str, str]


@dataclass(frozen=True)
class CapacityUse:
    """How many bots hold a slot of a capacity, and how many of those it concerns are queued."""

    in_use: int = 0
    queued: int = 0


def list_capacities(
    session: Session, *, page: PageRequest = PageRequest()
) -> tuple[list[Capacity], str | None]:
    """A page of capacities, oldest first."""
    return read_page(session, select(Capacity), keys=[Capacity.id], page=page)


def set_capacity(session: Session, *, label: Label | None, max_concurrent: int) -> Capacity:
    """Create or change the capacity of `label` (None: fleet-wide), audited. Raising one lets
    the queue admit within a timer interval; lowering one stops nobody (the running bots run
    on; no bot is admitted until fewer hold a slot)."""
    scope = FLEET_SCOPE if label is None else label_scope(*label)
    row = session.scalar(select(Capacity).where(Capacity.scope == scope).with_for_update())
    old = None if row is None else row.max_concurrent
    if row is None:
        row = Capacity(
            scope=scope,
            label_key=label[0] if label else None,
            label_value=label[1] if label else None,
            max_concurrent=max_concurrent,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError as exc:  # a racing PUT of the same scope inserted it first
            raise Conflict(
                ErrorCode.CONFLICT, "this capacity was just set by another request; retry"
            ) from exc
    else:
        row.max_concurrent = max_concurrent
        row.updated_at = utcnow()
    if old != max_concurrent:
        audit.record_admin_action(
            session,
            action=CAPACITY_SET,
            target=f"capacity:{row.id}",
            user_id=None,
            change={"label": row.label, "max_concurrent": [old, max_concurrent]},
        )
    return row


def remove_capacity(session: Session, capacity_id: str) -> None:
    """Remove a capacity (its bots are then limited by nothing but their users' limits);
    404 `capacity_not_found`."""
    row = session.scalar(select(Capacity).where(Capacity.id == capacity_id).with_for_update())
    if row is None:
        raise NotFound(ErrorCode.CAPACITY_NOT_FOUND, f"no capacity {capacity_id}")
    audit.record_admin_action(
        session,
        action=CAPACITY_REMOVED,
        target=f"capacity:{row.id}",
        user_id=None,
        change={"label": row.label, "max_concurrent": [row.max_concurrent, None]},
    )
    session.delete(row)


def applying(session: Session, labels: Mapping[str, str], *, lock: bool = False) -> list[Capacity]:
    """The capacities a bot with `labels` is under (fleet-wide first, then by id); `lock`:
    each row locked (`FOR UPDATE`) in that one order, as every creator and admission takes
    them, so that their counts are taken one holder at a time and never deadlock."""
    matches = [Capacity.label_key.is_(None)]
    if labels:
        pairs = [(k, v) for k, v in labels.items()]
        matches.append(tuple_(Capacity.label_key, Capacity.label_value).in_(pairs))
    query = select(Capacity).where(or_(*matches)).order_by(Capacity.id)
    rows = list(session.scalars(query.with_for_update() if lock else query))
    return sorted(rows, key=lambda row: (row.label_key is not None, row.id))


def all_capacities(session: Session) -> list[Capacity]:
    """Every capacity (an admin sets a few: read whole)."""
    return list(session.scalars(select(Capacity).order_by(Capacity.id)))


def lock_capacities(session: Session, capacities: Iterable[Capacity]) -> None:
    """Lock these capacities' rows in id order (see `applying`)."""
    ids = sorted({c.id for c in capacities})
    if ids:
        session.execute(select(Capacity.id).where(Capacity.id.in_(ids)).with_for_update())


def holding_fleet(session: Session) -> int:
    """Bots holding a slot, fleet-wide."""
    query = select(func.count()).select_from(Bot).where(Bot.status.in_(HOLDING))
    return int(session.scalar(query) or 0)


def holding_by_label(session: Session, labels: Iterable[Label]) -> dict[Label, int]:
    """Bots holding a slot and carrying each label (every label gets an entry)."""
    wanted = sorted(set(labels))
    found: dict[Label, int] = dict.fromkeys(wanted, 0)
    if not wanted:
        return found
    rows = session.execute(
        select(BotLabel.key, BotLabel.value, func.count())
        .join(Bot, Bot.id == BotLabel.bot_id)
        .where(tuple_(BotLabel.key, BotLabel.value).in_(wanted), Bot.status.in_(HOLDING))
        .group_by(BotLabel.key, BotLabel.value)
    )
    for key, value, count in rows:
        found[(key, value)] = int(count)
    return found


def usage(session: Session, capacities: Sequence[Capacity]) -> dict[str, CapacityUse]:
    """Each capacity's bots holding a slot and its queued bots (grouped reads: one for the
    fleet-wide, one for every label on the page)."""
    found: dict[str, CapacityUse] = {}
    live = [s.value for s in HOLDS_CAPACITY | {BotStatus.QUEUED}]
    labelled = [c for c in capacities if c.label_pair is not None]
    by_label: dict[Label, dict[str, int]] = {}
    if labelled:
        rows = session.execute(
            select(BotLabel.key, BotLabel.value, Bot.status, func.count())
            .join(Bot, Bot.id == BotLabel.bot_id)
            .where(
                tuple_(BotLabel.key, BotLabel.value).in_([c.label_pair for c in labelled]),
                Bot.status.in_(live),
            )
            .group_by(BotLabel.key, BotLabel.value, Bot.status)
        )
        for key, value, status, count in rows:
            by_label.setdefault((key, value), {})[str(status)] = int(count)
    fleet: dict[str, int] | None = None
    for capacity in capacities:
        pair = capacity.label_pair
        if pair is None:
            if fleet is None:
                by_status = session.execute(
                    select(Bot.status, func.count())
                    .where(Bot.status.in_(live))
                    .group_by(Bot.status)
                )
                fleet = {str(status): int(count) for status, count in by_status}
            counts = fleet
        else:
            counts = by_label.get(pair, {})
        queued = counts.get(BotStatus.QUEUED.value, 0)
        found[capacity.id] = CapacityUse(sum(counts.values()) - queued, queued)
    return found


def room_for(session: Session, user_ids: Sequence[str], capacities: Sequence[Capacity]) -> Room:
    """How many more bots each of these users, the fleet and each capped label may run now."""
    limits = dict(
        session.execute(select(User.id, User.max_concurrent_bots).where(User.id.in_(user_ids)))
        .tuples()
        .all()
    )
    held = dict(
        session.execute(
            select(Bot.user_id, func.count())
            .where(Bot.user_id.in_(user_ids), Bot.status.in_(HOLDING))
            .group_by(Bot.user_id)
        )
        .tuples()
        .all()
    )
    room = Room(users={u: limit - int(held.get(u, 0)) for u, limit in limits.items()})
    labelled = {c.label_pair: c.max_concurrent for c in capacities if c.label_pair is not None}
    for capacity in capacities:
        if capacity.label_pair is None:
            room.fleet = capacity.max_concurrent - holding_fleet(session)
    for pair, count in holding_by_label(session, labelled).items():
        room.labels[pair] = labelled[pair] - count
    return room
