"""Geometry of the Fleet-health page's stacked bar chart, drawn as inline SVG by the template.

Computed here rather than in Jinja so the arithmetic can be tested; the template only writes
the numbers out (the CSP forbids inline scripts, so the chart is plain markup).
"""

from __future__ import annotations

from dataclasses import dataclass

from botfleet.manager.ui.health_data import STATUS_ORDER, StatusBucket

WIDTH = 960
HEIGHT = 200
PLOT_TOP = 10
PLOT_BOTTOM = 170  # the x axis; labels below it
PLOT_LEFT = 36
GAP = 4

#: Fallback fills; ui.css colours `svg.timeline rect.<status>` the same way as the badges.
FILLS = {
    "queued": "#b0a36b",
    "requested": "#8a94a6",
    "starting": "#d08a00",
    "active": "#1f9d55",
    "stopping": "#7a5af8",
    "completed": "#2f6fb0",
    "failed": "#d92d20",
}


@dataclass(frozen=True)
class Bar:
    """One status' share of one bucket's bar."""

    x: float
    y: float
    width: float
    height: float
    status: str
    count: int
    title: str

    @property
    def fill(self) -> str:
        return FILLS.get(self.status, "#999")


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class ChartGeometry:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    peak: int
    axis_y: float
    left: float


def stacked_bars(buckets: list[StatusBucket]) -> ChartGeometry:
    """One bar per bucket, its statuses stacked bottom-up in lifecycle order, scaled so the
    tallest bar fills the plot."""
    peak = max((b.total for b in buckets), default=0)
    plot_h = PLOT_BOTTOM - PLOT_TOP
    slot = (WIDTH - PLOT_LEFT) / max(len(buckets), 1)
    bars: list[Bar] = []
    ticks: list[Tick] = []
    for i, bucket in enumerate(buckets):
        x = PLOT_LEFT + i * slot + GAP / 2
        y = float(PLOT_BOTTOM)
        for status in STATUS_ORDER:
            count = bucket.counts.get(status, 0)
            if not count or not peak:
                continue
            h = plot_h * count / peak
            y -= h
            bars.append(
                Bar(
                    x=round(x, 2),
                    y=round(y, 2),
                    width=round(slot - GAP, 2),
                    height=round(h, 2),
                    status=status.value,
                    count=count,
                    title=f"{bucket.end:%H:%M} UTC: {count} {status.value}",
                )
            )
        minutes_ago = round((buckets[-1].end - bucket.end).total_seconds() / 60)
        if i % 3 == 2 or i == len(buckets) - 1:
            label = "now" if minutes_ago == 0 else f"-{minutes_ago} min"
            ticks.append(Tick(x=round(x + (slot - GAP) / 2, 2), label=label))
    return ChartGeometry(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        ticks=ticks,
        peak=peak,
        axis_y=PLOT_BOTTOM,
        left=PLOT_LEFT,
    )
