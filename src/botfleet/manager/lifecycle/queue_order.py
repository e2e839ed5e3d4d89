"""The queue's arithmetic, pure: the order bots leave it in, which of them fit, and positions.

Queued bots are admitted higher `priority` first, then first come (`queued_at`, then id), each
only while every limit it is under has room: its user's `max_concurrent_bots`, the fleet-wide
capacity and the capacity of each of its labels that has one. A bot blocked by one limit never
holds back a later bot that limit does not concern (another user's bot, a bot without the full
label). `services/queue.py` reads the rows and the counts and stores what these functions decide;
`tests/unit/test_queue_order.py` checks them as tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

Label = tuple[str, str]


@dataclass(frozen=True)
class Waiting:
    """A queued bot as admission sees it; `labels`: those of its labels that have a capacity."""

    id: str
    user_id: str
    priority: int
    queued_at: datetime
    labels: frozenset[Label] = frozenset()


def order_key(bot: Waiting) -> tuple[int, datetime, str]:
    """Admission order: higher priority first, then first come, then the (time-ordered) id."""
    return (-bot.priority, bot.queued_at, bot.id)


@dataclass
class Room:
    """How many more bots each limit lets hold a slot (0 or less: full). A user missing from
    `users` has no room; `fleet` None: no fleet-wide capacity; a label missing from `labels`:
    no capacity on it."""

    users: dict[str, int] = field(default_factory=dict)
    fleet: int | None = None
    labels: dict[Label, int] = field(default_factory=dict)

    def blocker(self, bot: Waiting) -> str | None:
        """What keeps `bot` out now (`user`, `fleet`, `label k:v`); None when it fits."""
        if self.users.get(bot.user_id, 0) <= 0:
            return "user"
        if self.fleet is not None and self.fleet <= 0:
            return "fleet"
        for key, value in sorted(bot.labels):
            if self.labels.get((key, value), 1) <= 0:
                return f"label {key}:{value}"
        return None

    def take(self, bot: Waiting, slots: int = 1) -> None:
        """`bot` now holds a slot of every limit it is under (`slots` -1: gives it back)."""
        self.users[bot.user_id] = self.users.get(bot.user_id, 0) - slots
        if self.fleet is not None:
            self.fleet -= slots
        for label in bot.labels:
            if label in self.labels:
                self.labels[label] -= slots

    def give(self, bot: Waiting) -> None:
        """`bot` no longer holds its slots (a count that included it, seen without it)."""
        self.take(bot, -1)


def admissions(waiting: Iterable[Waiting], room: Room) -> list[Waiting]:
    """The bots to admit now, in admission order: each that fits once those before it took
    their slots. `room` is used up as they are taken."""
    chosen = []
    for bot in sorted(waiting, key=order_key):
        if room.blocker(bot) is None:
            room.take(bot)
            chosen.append(bot)
    return chosen


def positions(
    queue: Iterable[Waiting], targets: Collection[str], *, fleet_capped: bool
) -> dict[str, int]:
    """Each target's 1-based place among the bots competing with it for a slot: the queued
    bots ahead of it in admission order that share a limit with it (the same user, a capped
    label of its own, or any bot while a fleet-wide capacity is set), plus one. `queue` must
    hold every queued bot ahead of the targets; a target not in it gets no position."""
    ordered = sorted(queue, key=order_key)
    wanted = set(targets)
    by_user: dict[str, set[str]] = defaultdict(set)
    by_label: dict[Label, set[str]] = defaultdict(set)
    for bot in ordered:
        if bot.id in wanted:
            by_user[bot.user_id].add(bot.id)
            for label in bot.labels:
                by_label[label].add(bot.id)
    found: dict[str, int] = {}
    ahead: dict[str, int] = defaultdict(int)
    for rank, bot in enumerate(ordered, 1):
        if bot.id in wanted:
            found[bot.id] = rank if fleet_capped else ahead[bot.id] + 1
            by_user[bot.user_id].discard(bot.id)
            for label in bot.labels:
                by_label[label].discard(bot.id)
        if fleet_capped:
            continue
        competing = set(by_user.get(bot.user_id, ()))
        for label in bot.labels:
            competing |= by_label.get(label, set())
        for target in competing:
            ahead[target] += 1
    return found


def in_line_since(now: datetime, start_at: datetime | None) -> datetime:
    """When a bot queued `now` joins the line: now, or its `start_at` when that is later (a
    scheduled bot competes for a slot from its time, and its timeout counts from then)."""
    return start_at if start_at is not None and start_at > now else now


def queue_deadline(queued_at: datetime, timeout_s: float | None) -> datetime | None:
    """When a queued bot's wait runs out (`queue_timeout`); None: it waits as long as needed."""
    return None if timeout_s is None else queued_at + timedelta(seconds=timeout_s)
