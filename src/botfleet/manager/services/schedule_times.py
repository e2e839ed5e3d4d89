"""A schedule's times, pure: when it fires next, in its IANA zone; when a bot it started ends;
what a due firing does when fire times were missed. No database, no clock of its own.

Cron expressions are read by croniter on *wall-clock* times of the zone (naive datetimes: no
DST arithmetic inside the library); this module maps each wall time to one instant:

- a wall time that does not exist (the hour skipped when clocks go forward) is **shifted** to
  the first instant after the gap (02:30 on the spring-forward night in Europe/Berlin fires at
  03:00 CEST); several times in one gap fire once there;
- a wall time that happens twice (the hour repeated when clocks go back) fires **once**, at its
  first occurrence (02:30 CEST, not again at 02:30 CET).

Expressions: the 5 standard fields (`minute hour day-of-month month day-of-week`), the
`@hourly`-style aliases, or 6 fields with **seconds first** (`second minute hour ...`), never
more often than every `MIN_INTERVAL_S` seconds.
"""

from __future__ import annotations

import functools
import itertools
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Literal

from croniter import croniter

from botfleet.manager.core.errors import ErrorCode, Invalid

#: The shortest interval a schedule may fire at: a 6-field expression's seconds are at least this
#: far apart (a 5-field one fires at most once a minute anyway).
MIN_INTERVAL_S = 5
#: A fire time handled more than this late was missed (the manager was down, or its loop could
#: not reach the database): `missed` decides what happens. Within it, the firing is just late.
MISSED_AFTER_S = 60.0
#: A fire time is looked for at most this many years ahead (`0 0 30 2 *` never fires: 422).
MAX_YEARS_AHEAD = 10
#: Wall times tried before giving up (a repeated hour of a 5-second schedule is 720).
_MAX_STEPS = 5000
_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")

Overlap = Literal["skip", "allow", "replace"]
Missed = Literal["skip", "run_once"]


@dataclass(frozen=True)
class CronSpec:
    """A checked expression in its zone."""

    expression: str
    zone: tzinfo
    with_seconds: bool


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_zone(name: str) -> tzinfo:
    """The IANA zone `name` (`Europe/Berlin`, `UTC`); 422 `unknown_timezone` otherwise."""
    if not _ZONE_NAME.match(name) or name not in _zone_names():
        raise Invalid(
            ErrorCode.UNKNOWN_TIMEZONE,
            f"unknown time zone {name[:64]!r}: an IANA name such as Europe/Berlin or UTC",
        )
    return zoneinfo.ZoneInfo(name)


def parse_cron(expression: str, timezone: str) -> CronSpec:
    """A checked expression: 422 `invalid_cron` (unreadable, or it never fires),
    `cron_too_frequent` (seconds closer than MIN_INTERVAL_S), `unknown_timezone`."""
    zone = parse_zone(timezone)
    text = " ".join(expression.split())
    fields = text.split(" ")
    if text.lower() not in _ALIASES and len(fields) not in (5, 6):
        raise Invalid(
            ErrorCode.INVALID_CRON,
            "a cron expression has 5 fields (minute hour day month weekday), or 6 with the "
            "seconds first; or one of @hourly, @daily, @weekly, @monthly, @yearly",
        )
    with_seconds = len(fields) == 6
    try:
        expanded, _ = croniter.expand(text, second_at_beginning=with_seconds)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        message = f"cron expression {text!r}: {_first_line(exc)}"
        raise Invalid(ErrorCode.INVALID_CRON, message) from exc
    if with_seconds:
        _check_interval(expanded[5])
    spec = CronSpec(text, zone, with_seconds)
    next_fire(spec, datetime(2027, 1, 1, tzinfo=UTC))  # 422 if it never fires
    return spec


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _check_interval(seconds: Sequence[int | str]) -> None:
    """The seconds of a minute it fires at are MIN_INTERVAL_S apart, around the minute too
    (`*/7` fires at :56 and again at :00)."""
    if "*" in seconds:
        gap = 1
    else:
        marks = sorted(int(s) for s in seconds)
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        gap = min([*gaps, marks[0] + 60 - marks[-1]])
    if gap < MIN_INTERVAL_S:
        raise Invalid(
            ErrorCode.CRON_TOO_FREQUENT,
            f"this schedule would fire {gap} s apart; at most once every {MIN_INTERVAL_S} s",
        )


def _iterator(spec: CronSpec, wall: datetime) -> croniter:
    return croniter(
        spec.expression,
        wall,
        ret_type=datetime,
        second_at_beginning=spec.with_seconds,
        max_years_between_matches=MAX_YEARS_AHEAD,
    )


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    """The zone's wall-clock reading at `instant`, naive (through UTC: `astimezone` to the
    zone an aware time already has would change nothing, not even a nonexistent time)."""
    return instant.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def _exists(wall: datetime, zone: tzinfo) -> bool:
    return _wall(wall.replace(tzinfo=zone, fold=0), zone) == wall


def wall_to_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The UTC instant a naive wall time of `zone` fires at: its first occurrence when it
    happens twice; the end of the gap when it does not exist."""
    if not _exists(wall, zone):
        step = wall.replace(second=0, microsecond=0)
        for _ in range(2 * 24 * 60):
            step += timedelta(minutes=1)
            if _exists(step, zone):
                wall = step
                break
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def next_fire(spec: CronSpec, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC. 422 `invalid_cron` when the
    expression has none within MAX_YEARS_AHEAD years."""
    try:
        times = _iterator(spec, _wall(after, spec.zone))
        for _ in range(_MAX_STEPS):
            instant = wall_to_instant(times.get_next(), spec.zone)
            if instant > after:
                return instant
    except (ValueError, OverflowError) as exc:  # croniter's "failed to find next date"
        raise Invalid(
            ErrorCode.INVALID_CRON, f"cron expression {spec.expression!r} never fires"
        ) from exc
    raise Invalid(ErrorCode.INVALID_CRON, f"cron expression {spec.expression!r} never fires")


def latest_fire(spec: CronSpec, at: datetime) -> datetime | None:
    """The last fire time at or before `at`, in UTC; None when there is none within
    MAX_YEARS_AHEAD years."""
    try:
        times = _iterator(spec, _wall(at, spec.zone) + timedelta(microseconds=1))
        for _ in range(_MAX_STEPS):
            instant = wall_to_instant(times.get_prev(), spec.zone)
            if instant <= at:
                return instant
    except (ValueError, OverflowError):
        return None
    return None


def parse_window_end(value: str) -> time:
    match = _HH_MM.match(value)
    if match is None:
        raise ValueError("window_end is a wall-clock time HH:MM, 00:00 to 23:59")
    return time(int(match.group(1)), int(match.group(2)))


def window_end_after(fire: datetime, window_end: str, zone: tzinfo) -> datetime:
    """The first `window_end` wall time of `zone` after the fire time (the same day when it is
    later that day, else the next): DST as for fire times."""
    end = parse_window_end(window_end)
    day = fire.astimezone(zone).date()
    for offset in range(3):
        candidate = wall_to_instant(datetime.combine(day + timedelta(days=offset), end), zone)
        if candidate > fire:
            return candidate
    raise AssertionError("a wall-clock time recurs within three days")  # pragma: no cover


def stop_at(
    fire: datetime, *, duration_s: int | None, window_end: str | None, zone: tzinfo
) -> datetime | None:
    """When the bot started for `fire` is stopped: `duration_s` after the fire time, or at the
    window's end, whichever comes first; None when the schedule sets neither."""
    end = bot_end(fire, duration_s=duration_s, window_end=window_end, zone=zone)
    return end[0] if end else None


def bot_end(
    fire: datetime, *, duration_s: int | None, window_end: str | None, zone: tzinfo
) -> tuple[datetime, str] | None:
    """`stop_at`, with the transition reason of that stop: `schedule_duration` or
    `schedule_window`."""
    ends = []
    if duration_s is not None:
        ends.append((fire + timedelta(seconds=duration_s), "schedule_duration"))
    if window_end is not None:
        ends.append((window_end_after(fire, window_end, zone), "schedule_window"))
    return min(ends) if ends else None


@dataclass(frozen=True)
class FiringPlan:
    """What a pass does with a due schedule: fire for `fire_for` (None: start nothing), record
    the fire times from `missed_from` to `missed_until` as missed (None: none), then wait for
    `next_fire_at`."""

    fire_for: datetime | None
    missed_from: datetime | None
    missed_until: datetime | None
    next_fire_at: datetime
    stop_at: datetime | None = None
    stop_reason: str | None = None


def plan_firing(
    spec: CronSpec,
    *,
    due: datetime,
    now: datetime,
    missed: Missed,
    duration_s: int | None = None,
    window_end: str | None = None,
) -> FiringPlan:
    """Plan the firing of a schedule whose `next_fire_at` (`due`) has come.

    The latest fire time not after `now` is fired if it is at most MISSED_AFTER_S late; the
    fire times before it (the manager was down, or is catching up) are missed. When even the
    latest is later than that, `missed` decides: `skip` starts nothing; `run_once` starts one
    bot for all of them, for the latest, if its duration or window has not ended yet."""
    latest = latest_fire(spec, now)
    if latest is None or latest < due:
        latest = due  # `due` was computed by an older expression: it is the one to honour
    following = next_fire(spec, now)
    missed_until = _previous(spec, latest, after=due)
    end = bot_end(latest, duration_s=duration_s, window_end=window_end, zone=spec.zone)
    on_time = (now - latest).total_seconds() <= MISSED_AFTER_S
    if on_time or (missed == "run_once" and (end is None or end[0] > now)):
        stop, why = end or (None, None)
        return FiringPlan(latest, due if missed_until else None, missed_until, following,
                          stop_at=stop, stop_reason=why)  # fmt: skip
    return FiringPlan(None, due, latest, following)


def _previous(spec: CronSpec, fire: datetime, *, after: datetime) -> datetime | None:
    """The fire time just before `fire`, if it is not before `after`."""
    before = latest_fire(spec, fire - timedelta(microseconds=1))
    return before if before is not None and before >= after else None
