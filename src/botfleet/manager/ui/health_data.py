"""What the dashboard's Fleet-health page shows: bots by status over the last hour, latency
percentiles from the manager's own histograms, and its periodic loops' health.

The chart is computed from the transitions table backwards from each bot's current status, with
two bounded reads: the bots that lived during the window (live now, or ended inside it: both
indexed) and those bots' transitions inside it (by `bot_id`, indexed). Bots that ended before the
window, however many, are never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Histogram
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from botfleet.manager.background.loops import LoopHealth
from botfleet.manager.core import metrics
from botfleet.manager.core.models import Bot, BotTransition
from botfleet.manager.lifecycle.states import LIVE, BotStatus

WINDOW = timedelta(hours=1)
BUCKET = timedelta(minutes=5)
QUANTILES = (0.5, 0.9, 0.99)
#: The most bots and transitions one page view reads; beyond them the chart says it is partial.
MAX_BOTS = 20_000
MAX_TRANSITIONS = 100_000

STATUS_ORDER: tuple[BotStatus, ...] = tuple(BotStatus)


# ---- bots by status ------------------------------------------------------------------------


@dataclass(frozen=True)
class BotLife:
    """What the chart needs of one bot: when it was created and its status now."""

    id: str
    created_at: datetime
    status: BotStatus


@dataclass(frozen=True)
class Change:
    """One transition of a bot: its status before it, and when."""

    bot_id: str
    from_status: BotStatus
    at: datetime


@dataclass(frozen=True)
class StatusBucket:
    """How many bots were in each status at `end` (the end of a bucket)."""

    start: datetime
    end: datetime
    counts: dict[BotStatus, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class StatusChart:
    buckets: list[StatusBucket]
    partial: bool = False  # more bots or transitions than one view reads

    @property
    def peak(self) -> int:
        return max((b.total for b in self.buckets), default=0)

    @property
    def empty(self) -> bool:
        return self.peak == 0


def bucket_ends(
    now: datetime, *, window: timedelta = WINDOW, bucket: timedelta = BUCKET
) -> list[datetime]:
    """The end of each bucket, oldest first; the last one is `now`."""
    n = max(1, round(window / bucket))
    return [now - bucket * (n - 1 - i) for i in range(n)]


def status_series(
    bots: Iterable[BotLife],
    changes: Iterable[Change],
    *,
    now: datetime,
    window: timedelta = WINDOW,
    bucket: timedelta = BUCKET,
) -> list[StatusBucket]:
    """Bots by status at the end of each bucket of the window.

    A bot's status at time t is the `from_status` of its first transition after t, or its
    current status when none came after t; before it was created it is not counted. `changes`
    must hold every transition of these bots after the window's start.
    """
    later: dict[str, list[Change]] = {}
    for change in sorted(changes, key=lambda c: c.at):
        later.setdefault(change.bot_id, []).append(change)
    ends = bucket_ends(now, window=window, bucket=bucket)
    counts = [dict.fromkeys(STATUS_ORDER, 0) for _ in ends]
    for bot in bots:
        own = later.get(bot.id, [])
        for i, end in enumerate(ends):
            if bot.created_at > end:
                continue
            after = next((c for c in own if c.at > end), None)
            counts[i][after.from_status if after else bot.status] += 1
    return [
        StatusBucket(start=end - bucket, end=end, counts=count)
        for end, count in zip(ends, counts, strict=True)
    ]


def status_chart(
    session: Session, *, user_id: str | None, now: datetime, window: timedelta = WINDOW
) -> StatusChart:
    """Bots by status over the window: one user's bots, or every bot (`user_id` None)."""
    start = now - window
    lived = or_(Bot.status.in_([s.value for s in LIVE]), Bot.ended_at >= start)
    scope = [lived] if user_id is None else [lived, Bot.user_id == user_id]
    rows = session.execute(
        select(Bot.id, Bot.created_at, Bot.status).where(*scope).limit(MAX_BOTS + 1)
    ).all()
    moves = session.execute(
        select(BotTransition.bot_id, BotTransition.from_status, BotTransition.at)
        .join(Bot, Bot.id == BotTransition.bot_id)
        .where(*scope, BotTransition.at > start)
        .limit(MAX_TRANSITIONS + 1)
    ).all()
    bots = [BotLife(r.id, r.created_at, BotStatus(r.status)) for r in rows[:MAX_BOTS]]
    changes = [Change(m.bot_id, BotStatus(m.from_status), m.at) for m in moves[:MAX_TRANSITIONS]]
    return StatusChart(
        buckets=status_series(bots, changes, now=now, window=window),
        partial=len(rows) > MAX_BOTS or len(moves) > MAX_TRANSITIONS,
    )


# ---- percentiles from histograms -------------------------------------------------------------


@dataclass(frozen=True)
class Percentile:
    """An estimate of one quantile. `above` is set when it falls in the `+Inf` bucket: the
    value is then the largest finite bound, and the truth is somewhere above it."""

    q: float
    seconds: float
    above: bool = False

    @property
    def label(self) -> str:
        return f"p{round(self.q * 100):d}"


@dataclass(frozen=True)
class Latency:
    """A histogram summed over its label sets: how many observations, and their quantiles."""

    title: str
    count: int
    percentiles: list[Percentile] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.count == 0


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> Percentile | None:
    """Estimate the `q` quantile from cumulative histogram buckets `(upper bound, count)`
    sorted by bound and ending with `+Inf`, as Prometheus' `histogram_quantile` does: linear
    interpolation inside the bucket that holds the rank (from 0 for the first bucket). None
    when there are no observations."""
    if not buckets or not 0 <= q <= 1:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return Percentile(q, lower_bound, above=True)
            share = (rank - lower_count) / (count - lower_count)
            return Percentile(q, lower_bound + (bound - lower_bound) * share)
        lower_bound, lower_count = bound, count
    return None


def histogram_buckets(histogram: Histogram) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets summed over every label set, sorted by bound."""
    totals: dict[float, float] = {}
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                totals[bound] = totals.get(bound, 0.0) + sample.value
    return sorted(totals.items())


def latency(title: str, histogram: Histogram, qs: Sequence[float] = QUANTILES) -> Latency:
    buckets = histogram_buckets(histogram)
    count = int(buckets[-1][1]) if buckets else 0
    found = [quantile(q, buckets) for q in qs]
    return Latency(title=title, count=count, percentiles=[p for p in found if p is not None])


def latencies() -> list[Latency]:
    """Launch latency and command round trip, as this manager process measured them."""
    return [
        latency("Launch (orchestrator)", metrics.LAUNCH_SECONDS),
        latency("Command round trip", metrics.COMMAND_ROUND_TRIP),
    ]


# ---- loops -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopView:
    """A periodic loop as the page shows it."""

    name: str
    state: str
    interval_s: float
    last_ok_at: datetime | None
    last_ok_ago_s: float | None
    consecutive_failures: int
    last_error: str | None

    @property
    def healthy(self) -> bool:
        return self.state in ("ok", "standby")


def loop_views(loops: Iterable[LoopHealth], *, now: datetime) -> list[LoopView]:
    return [
        LoopView(
            name=h.name,
            state=h.state,
            interval_s=h.interval_s,
            last_ok_at=h.last_ok_at,
            last_ok_ago_s=(now - h.last_ok_at).total_seconds() if h.last_ok_at else None,
            consecutive_failures=h.consecutive_failures,
            last_error=h.last_errors[-1].message if h.last_errors else None,
        )
        for h in loops
    ]


# ---- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetHealth:
    now: datetime
    chart: StatusChart
    latencies: list[Latency]
    loops: list[LoopView]


def fleet_health(
    session: Session, *, user_id: str | None, loops: Iterable[LoopHealth], now: datetime
) -> FleetHealth:
    """Everything the page shows; `user_id` None is the admin's view of every user's bots."""
    return FleetHealth(
        now=now,
        chart=status_chart(session, user_id=user_id, now=now),
        latencies=latencies(),
        loops=loop_views(loops, now=now),
    )
