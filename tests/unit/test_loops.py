"""The periodic loops (`background/loops.py`): jitter, backoff, bounded errors, a tick that never
raises. Against a real manager: tests/integration/services/test_loops_readyz.py."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from botfleet.manager.background.leader import LeaseUnavailable
from botfleet.manager.background.loops import (
    ERRORS_KEPT,
    FAILURES_TOLERATED,
    IntervalLoop,
    StepsFailed,
    describe,
    run_steps,
)
from tests.support import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Job:
    """A `run_once` that fails while `failing` is set, counting its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.failing = False

    def __call__(self) -> None:
        self.runs += 1
        if self.failing:
            raise RuntimeError(f"boom {self.runs}")


class FakeLease:
    def __init__(self, answer: bool | Exception = True) -> None:
        self.answer = answer

    def hold(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def make_loop(job: Job, clock: FakeClock, **kwargs: Any) -> IntervalLoop:
    return IntervalLoop("job", job, interval_s=2.0, clock=clock, **kwargs)


def test_ticks_come_every_interval_with_a_bounded_jitter() -> None:
    loop = IntervalLoop("job", Job(), interval_s=2.0)
    trigger = loop.trigger()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [
        (trigger.get_next_fire_time(start, start) - start).total_seconds() for _ in range(300)
    ]
    assert all(2.0 <= delay <= 2.0 + loop.jitter_s for delay in delays), (min(delays), max(delays))
    assert loop.jitter_s == pytest.approx(0.2)
    assert max(delays) - min(delays) > 0.05, "the jitter varies"


def test_backoff_grows_after_repeated_failures_and_resets_on_success() -> None:
    job, clock = Job(), FakeClock()
    loop = make_loop(job, clock)
    job.failing = True
    for expected in range(1, FAILURES_TOLERATED):
        loop.tick()
        assert job.runs == expected
        assert loop.health().consecutive_failures == expected
        assert not loop.health().failing, "a few failures are tolerated"
    waits = []
    for failures in range(FAILURES_TOLERATED, FAILURES_TOLERATED + 6):
        loop.tick()
        assert job.runs == failures and loop.health().failing
        wait = loop.backoff_s(failures)
        waits.append(wait)
        clock.now += wait - 0.01
        loop.tick()
        assert job.runs == failures, "no attempt during the backoff"
        clock.now += 0.01
    assert waits == [4.0, 8.0, 16.0, 32.0, 32.0, 32.0], "doubles, capped at 16 intervals"
    assert loop.backoff_s(100) == 32.0

    job.failing = False
    loop.tick()
    health = loop.health()
    assert (health.state, health.consecutive_failures) == ("ok", 0)
    assert health.last_ok_at is not None
    assert health.last_ok_at > datetime.now(UTC) - timedelta(seconds=5)
    runs = job.runs
    loop.tick()
    assert job.runs == runs + 1, "no backoff left after a success"


def test_the_backoff_never_exceeds_a_minute_nor_goes_below_the_interval() -> None:
    assert IntervalLoop("slow", Job(), interval_s=30).backoff_s(50) == 60.0
    assert IntervalLoop("slower", Job(), interval_s=120).backoff_s(50) == 120.0


def test_errors_are_bounded_and_newest_last() -> None:
    job, clock = Job(), FakeClock()
    loop = make_loop(job, clock)
    job.failing = True
    for _ in range(20):
        loop.tick()
        clock.now += 1000
    health = loop.health()
    assert health.consecutive_failures == 20
    assert len(health.last_errors) == ERRORS_KEPT
    assert [e.message for e in health.last_errors] == [
        f"RuntimeError: boom {n}" for n in range(16, 21)
    ]
    body = health.as_dict()
    assert body["state"] == "failing" and body["last_error"] == "RuntimeError: boom 20"


def test_an_exception_never_leaves_the_tick() -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            return ""

    for error in (RuntimeError("x"), KeyError("k"), Odd(), ValueError("two\nlines")):

        def run_once(error: Exception = error) -> None:
            raise error

        loop = IntervalLoop("job", run_once, interval_s=1)
        assert loop.tick() is None
        assert loop.health().consecutive_failures == 1
    assert loop.health().last_errors[-1].message == "ValueError: two"


def test_leader_only_loops_stand_by_and_an_unreachable_lease_is_a_failure() -> None:
    job, clock = Job(), FakeClock()
    lease = FakeLease(LeaseUnavailable("cannot try the leader lock: connection refused"))
    loop = make_loop(job, clock, lease=lease)
    for _ in range(FAILURES_TOLERATED):
        loop.tick()
        clock.now += 1000
    assert job.runs == 0
    health = loop.health()
    assert health.failing
    assert "LeaseUnavailable: cannot try the leader lock" in health.last_errors[-1].message

    lease.answer = False  # another replica leads now
    loop.tick()
    health = loop.health()
    assert (health.state, health.consecutive_failures, job.runs) == ("standby", 0, 0)
    assert not health.failing

    lease.answer = True
    loop.tick()
    assert (loop.health().state, job.runs) == ("ok", 1)


def test_errors_never_show_sql_parameters_or_credentials() -> None:
    error = OperationalError(
        "INSERT INTO keys (secret) VALUES (%(secret)s)",
        {"secret": "hunter2"},
        Exception('connection to "postgresql://bf:pa55word@db:5432/x" failed\ndetail'),
    )
    line = describe(error)
    assert "hunter2" not in line and "pa55word" not in line and "INSERT" not in line
    assert line == 'Exception: connection to "postgresql://***@db:5432/x" failed'


def test_run_steps_runs_every_step_then_reports_the_failed_ones() -> None:
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        raise RuntimeError("down")

    def second() -> None:
        ran.append("second")

    def third() -> None:
        ran.append("third")
        raise KeyError("gone")

    with pytest.raises(StepsFailed) as caught:
        run_steps((first, second, third), what="test")
    assert ran == ["first", "second", "third"]
    assert describe(caught.value) == "first: RuntimeError: down; third: KeyError: 'gone'"
    run_steps((second,), what="test")


def test_a_failing_loop_keeps_being_scheduled() -> None:
    job = Job()
    job.failing = True
    loop = IntervalLoop("job", job, interval_s=0.02)
    scheduler = BackgroundScheduler(timezone="UTC")
    loop.schedule(scheduler)
    scheduler.start()
    try:
        wait_until(lambda: loop.health().failing, timeout=5, what="the loop to be failing")
        job.failing = False
        wait_until(lambda: loop.health().state == "ok", timeout=5, what="the loop to recover")
    finally:
        scheduler.shutdown(wait=True)


def test_health_is_read_safely_while_ticks_run() -> None:
    job = Job()
    job.failing = True
    loop = IntervalLoop("job", job, interval_s=0.0001)
    stop = threading.Event()

    def ticking() -> None:
        while not stop.is_set():
            loop.tick()
            time.sleep(0)

    worker = threading.Thread(target=ticking)
    worker.start()
    try:
        for _ in range(200):
            body = loop.health().as_dict()
            assert len(body["last_errors"]) <= ERRORS_KEPT
    finally:
        stop.set()
        worker.join()


# ---- against a real manager --------------------------------------------------------------
