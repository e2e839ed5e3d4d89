"""The Fleet-health page's arithmetic, pure: percentiles from histogram buckets, bots by status per
5-minute bucket, the chart's geometry, the loops' views. The same page from a real database:
tests/integration/services/test_fleet_health.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from botfleet.manager.background.loops import LoopError, LoopHealth
from botfleet.manager.lifecycle.states import BotStatus
from botfleet.manager.ui import health_data as fh
from botfleet.manager.ui.charts import PLOT_BOTTOM, PLOT_TOP, stacked_bars
from tests.fleet_health_story import NOW, ago, expected, story

S = BotStatus


INF = float("inf")


def test_quantiles_interpolate_inside_the_bucket_that_holds_the_rank() -> None:
    buckets = [(1.0, 10.0), (2.0, 30.0), (5.0, 40.0), (INF, 40.0)]
    estimates = {q: fh.quantile(q, buckets) for q in (0.25, 0.5, 0.9, 0.99)}
    assert {q: p.seconds if p else None for q, p in estimates.items()} == pytest.approx(
        {0.25: 1.0, 0.5: 1.5, 0.9: 3.8, 0.99: 4.88}
    )
    assert not any(p.above for p in estimates.values() if p)


def test_a_quantile_in_the_inf_bucket_is_the_largest_bound_and_says_so() -> None:
    p99 = fh.quantile(0.99, [(1.0, 5.0), (10.0, 5.0), (INF, 10.0)])
    assert p99 is not None and p99.above and p99.seconds == 10.0
    p10 = fh.quantile(0.1, [(1.0, 5.0), (10.0, 5.0), (INF, 10.0)])
    assert p10 is not None and not p10.above and p10.seconds == pytest.approx(0.2)


def test_no_observations_means_no_estimate() -> None:
    assert fh.quantile(0.5, [(1.0, 0.0), (INF, 0.0)]) is None
    assert fh.quantile(0.5, []) is None


def test_a_histogram_is_summed_over_its_label_sets() -> None:
    registry = CollectorRegistry()
    h = Histogram("t_seconds", "test", ["backend"], buckets=(1, 2, 5), registry=registry)
    for value in [0.5] * 10:
        h.labels("process").observe(value)
    for value in [1.5] * 20 + [4.0] * 10:
        h.labels("docker").observe(value)
    assert fh.histogram_buckets(h) == [(1.0, 10.0), (2.0, 30.0), (5.0, 40.0), (INF, 40.0)]
    result = fh.latency("t", h)
    assert result.count == 40 and not result.empty
    assert [p.label for p in result.percentiles] == ["p50", "p90", "p99"]
    assert [p.seconds for p in result.percentiles] == pytest.approx([1.5, 3.8, 4.88])


def test_an_unused_histogram_has_no_data() -> None:
    h = Histogram("u_seconds", "test", ["x"], registry=CollectorRegistry())
    result = fh.latency("u", h)
    assert result.empty and result.percentiles == []


def test_bots_by_status_at_the_end_of_each_bucket() -> None:
    bots, changes = story()
    series = fh.status_series(bots, changes, now=NOW)
    assert [b.end for b in series] == [ago(m) for m in range(55, -1, -5)]
    assert [b.counts for b in series] == expected()
    assert series[-1].total == 3 and series[0].total == 1


def test_bucket_ends_cover_the_window_up_to_now() -> None:
    ends = fh.bucket_ends(NOW)
    assert len(ends) == 12 and ends[-1] == NOW and ends[0] == ago(55)


def test_the_tallest_bar_fills_the_plot_and_stacks_are_proportional() -> None:
    bots, changes = story()
    geometry = stacked_bars(fh.status_series(bots, changes, now=NOW))
    last = [b for b in geometry.bars if b.x == max(bar.x for bar in geometry.bars)]
    assert sum(b.count for b in last) == 3 == geometry.peak
    assert sum(b.height for b in last) == pytest.approx(PLOT_BOTTOM - PLOT_TOP, abs=0.05)
    first = [b for b in geometry.bars if b.x == min(bar.x for bar in geometry.bars)]
    assert [(b.status, b.count) for b in first] == [("active", 1)]
    assert first[0].height == pytest.approx((PLOT_BOTTOM - PLOT_TOP) / 3, abs=0.05)
    assert first[0].y + first[0].height == pytest.approx(PLOT_BOTTOM)
    assert [t.label for t in geometry.ticks][-1] == "now"


def test_loops_show_their_last_good_run_and_last_error() -> None:
    failing = LoopHealth(
        name="webhooks",
        interval_s=1.0,
        state="failing",
        last_ok_at=ago(0.5),
        consecutive_failures=4,
        last_errors=(LoopError(ago(0.2), "old"), LoopError(ago(0.1), "OperationalError: down")),
    )
    waiting = LoopHealth("reconciler", 0.5, "waiting", None, 0, ())
    views = fh.loop_views([failing, waiting], now=NOW)
    assert [(v.name, v.healthy, v.last_ok_ago_s, v.last_error) for v in views] == [
        ("webhooks", False, 30.0, "OperationalError: down"),
        ("reconciler", False, None, None),
    ]
