"""A schedule's times (services/schedule_times.py): the next fire time in the schedule's zone,
across both DST changes (a skipped wall time is shifted to the end of the gap; a repeated one
fires once), window ends, the frequency floor, refusals, and what a late pass does with fire
times it missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from botfleet.manager.core.errors import Invalid
from botfleet.manager.services.schedule_times import (
    MISSED_AFTER_S,
    latest_fire,
    next_fire,
    parse_cron,
    plan_firing,
    stop_at,
    window_end_after,
)

BERLIN = "Europe/Berlin"  # CET +01:00, CEST +02:00
# 2026 in Europe/Berlin: clocks go forward 29 March 02:00 -> 03:00, back 25 October 03:00 -> 02:00.


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(cron: str, zone: str, after: datetime, count: int) -> list[datetime]:
    spec = parse_cron(cron, zone)
    out = []
    for _ in range(count):
        after = next_fire(spec, after)
        out.append(after)
    return out


def test_working_days_at_nine_in_the_zone() -> None:
    friday_noon = utc(2026, 1, 16, 11)  # 12:00 CET
    assert fires("0 9 * * 1-5", BERLIN, friday_noon, 2) == [
        utc(2026, 1, 19, 8),  # Monday 09:00 CET
        utc(2026, 1, 20, 8),
    ]
    summer = utc(2026, 7, 1, 12)
    assert fires("0 9 * * 1-5", BERLIN, summer, 1) == [utc(2026, 7, 2, 7)]  # 09:00 CEST


def test_next_fire_is_strictly_after() -> None:
    spec = parse_cron("0 9 * * *", "UTC")
    assert next_fire(spec, utc(2026, 3, 1, 9)) == utc(2026, 3, 2, 9)
    assert next_fire(spec, utc(2026, 3, 1, 8, 59, 59, 999999)) == utc(2026, 3, 1, 9)


def test_a_skipped_wall_time_is_shifted_to_the_end_of_the_gap() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin: it fires at 03:00 CEST (01:00 UTC),
    then at 02:30 CEST the next day."""
    assert fires("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
    ]


def test_every_minute_across_the_gap_fires_once_at_its_end() -> None:
    # 01:58 CET, 01:59 CET, then the whole skipped hour is one firing at 03:00 CEST.
    assert fires("* * * * *", BERLIN, utc(2026, 3, 29, 0, 57, 30), 4) == [
        utc(2026, 3, 29, 0, 58),
        utc(2026, 3, 29, 0, 59),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 1),
    ]


def test_a_repeated_wall_time_fires_once() -> None:
    """02:30 happens twice on 25 October 2026 in Berlin (CEST, then CET): it fires at the first
    (00:30 UTC), not at the second (01:30 UTC)."""
    assert fires("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    # From inside the second pass of the hour, too.
    assert fires("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 10), 1) == [utc(2026, 10, 26, 1, 30)]


def test_hourly_in_new_york_over_fall_back() -> None:
    # 1 November 2026: 02:00 EDT -> 01:00 EST; 01:00 happens twice and fires once.
    assert fires("0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30), 3) == [
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 7),  # 02:00 EST (01:00 EST, the repeat, does not fire)
        utc(2026, 11, 1, 8),
    ]


def test_seconds_first_and_its_floor() -> None:
    assert fires("*/5 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 1), 2) == [
        utc(2026, 1, 1, 0, 0, 5),
        utc(2026, 1, 1, 0, 0, 10),
    ]
    assert parse_cron("0,30 * * * * *", "UTC").with_seconds
    for too_often in ("* * * * * *", "*/4 * * * * *", "*/7 * * * * *", "0,59 * * * * *"):
        with pytest.raises(Invalid) as refused:
            parse_cron(too_often, "UTC")
        assert refused.value.code == "cron_too_frequent", too_often


@pytest.mark.parametrize(
    "cron",
    ["", "* * * *", "* * * * * * *", "61 * * * *", "x * * * *", "@reboot", "H * * * *",
     "0 0 30 2 *", "*/0 * * * *"],
)  # fmt: skip
def test_bad_expressions_are_refused(cron: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_cron(cron, "UTC")
    assert refused.value.code == "invalid_cron"


@pytest.mark.parametrize("zone", ["", "Mars/Olympus", "../../etc/passwd", "Europe", "local"])
def test_unknown_zones_are_refused(zone: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_cron("0 9 * * *", zone)
    assert refused.value.code == "unknown_timezone"


def test_aliases() -> None:
    assert fires("@daily", "UTC", utc(2026, 1, 1, 12), 1) == [utc(2026, 1, 2)]


def test_window_end_is_the_next_such_wall_time() -> None:
    zone = parse_cron("0 9 * * *", BERLIN).zone
    nine = utc(2026, 1, 19, 8)
    assert window_end_after(nine, "17:00", zone) == utc(2026, 1, 19, 16)
    assert window_end_after(nine, "02:00", zone) == utc(2026, 1, 20, 1)  # overnight: next day
    assert window_end_after(nine, "09:00", zone) == utc(2026, 1, 20, 8)  # a full day
    # On the spring-forward night, 02:30 is shifted like a fire time.
    assert window_end_after(utc(2026, 3, 28, 23), "02:30", zone) == utc(2026, 3, 29, 1)


def test_stop_at_is_the_earlier_of_duration_and_window() -> None:
    zone = parse_cron("0 9 * * *", BERLIN).zone
    nine = utc(2026, 1, 19, 8)
    assert stop_at(nine, duration_s=None, window_end=None, zone=zone) is None
    assert stop_at(nine, duration_s=3600, window_end="17:00", zone=zone) == nine + timedelta(
        hours=1
    )
    assert stop_at(nine, duration_s=86_400, window_end="17:00", zone=zone) == utc(2026, 1, 19, 16)


def test_latest_fire_is_at_or_before() -> None:
    spec = parse_cron("0 9 * * *", "UTC")
    assert latest_fire(spec, utc(2026, 3, 1, 9)) == utc(2026, 3, 1, 9)
    assert latest_fire(spec, utc(2026, 3, 1, 8, 59)) == utc(2026, 2, 28, 9)


class TestPlans:
    spec = parse_cron("0 9 * * 1-5", BERLIN)
    due = utc(2026, 1, 19, 8)  # Monday 09:00 CET
    tomorrow = utc(2026, 1, 20, 8)

    def test_on_time(self) -> None:
        plan = plan_firing(self.spec, due=self.due, now=self.due + timedelta(seconds=0.4),
                           missed="skip", window_end="17:00")  # fmt: skip
        assert (plan.fire_for, plan.missed_from, plan.next_fire_at) == (
            self.due,
            None,
            self.tomorrow,
        )
        assert plan.stop_at == utc(2026, 1, 19, 16)

    def test_late_within_the_grace_still_fires(self) -> None:
        now = self.due + timedelta(seconds=MISSED_AFTER_S - 1)
        assert plan_firing(self.spec, due=self.due, now=now, missed="skip").fire_for == self.due

    def test_missed_and_skipped(self) -> None:
        now = utc(2026, 1, 19, 8, 30)
        plan = plan_firing(self.spec, due=self.due, now=now, missed="skip", window_end="17:00")
        assert (plan.fire_for, plan.missed_from, plan.missed_until) == (None, self.due, self.due)
        assert plan.next_fire_at == self.tomorrow

    def test_missed_run_once_within_the_window(self) -> None:
        now = utc(2026, 1, 19, 8, 30)
        plan = plan_firing(self.spec, due=self.due, now=now, missed="run_once", window_end="17:00")
        assert (plan.fire_for, plan.missed_from, plan.stop_at) == (
            self.due,
            None,
            utc(2026, 1, 19, 16),
        )

    def test_missed_run_once_after_the_window_or_duration_starts_nothing(self) -> None:
        evening = utc(2026, 1, 19, 17)
        plan = plan_firing(self.spec, due=self.due, now=evening, missed="run_once",
                           window_end="17:00")  # fmt: skip
        assert plan.fire_for is None and plan.next_fire_at == self.tomorrow
        half_past = utc(2026, 1, 19, 8, 30)
        plan = plan_firing(self.spec, due=self.due, now=half_past, missed="run_once",
                           duration_s=600)  # fmt: skip
        assert plan.fire_for is None

    def test_run_once_without_an_end_runs_one_bot_for_many_missed_days(self) -> None:
        thursday = utc(2026, 1, 22, 10)  # down since Monday morning
        plan = plan_firing(self.spec, due=self.due, now=thursday, missed="run_once")
        assert plan.fire_for == utc(2026, 1, 22, 8)  # the latest: Thursday 09:00
        assert (plan.missed_from, plan.missed_until) == (self.due, utc(2026, 1, 21, 8))

    def test_fast_schedule_catching_up_fires_the_latest(self) -> None:
        spec = parse_cron("*/5 * * * * *", "UTC")
        due = utc(2026, 1, 1, 0, 0, 5)
        plan = plan_firing(spec, due=due, now=utc(2026, 1, 1, 0, 0, 21), missed="skip")
        assert plan.fire_for == utc(2026, 1, 1, 0, 0, 20)
        assert (plan.missed_from, plan.missed_until) == (due, utc(2026, 1, 1, 0, 0, 15))
        assert plan.next_fire_at == utc(2026, 1, 1, 0, 0, 25)
