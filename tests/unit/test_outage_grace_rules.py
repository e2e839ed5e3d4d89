"""Outages never kill healthy bots (issue 15, item 3), the rules alone: silence counts only while
the manager could listen, and the loop says when its lead begins again. Against a database and a
manager: tests/integration/resilience/test_outage_grace.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from botfleet.manager.background.leader import LeaseUnavailable
from botfleet.manager.background.loops import IntervalLoop
from botfleet.manager.lifecycle.rules import heartbeat_lost

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("last_heartbeat", "listening_since", "now", "lost"),
    [
        (0, 0, 29, False),  # within the budget
        (0, 0, 31, True),  # silent for longer than the budget, while the manager listened
        (0, 100, 120, False),  # silent 120 s, but the manager only listens since 100
        (0, 100, 131, True),  # a full budget heard since listening began: lost
        (110, 100, 135, False),  # a heartbeat after listening began counts from itself
        (None, 0, 31, True),  # never heard, after a full budget of listening
        (0, None, 1000, False),  # listening not (re)established: nothing is judged
    ],
)
def test_silence_counts_only_while_the_manager_could_listen(
    last_heartbeat: float | None, listening_since: float | None, now: float, lost: bool
) -> None:
    assert (
        heartbeat_lost(
            None if last_heartbeat is None else at(last_heartbeat),
            listening_since=None if listening_since is None else at(listening_since),
            now=at(now),
            budget_s=30,
        )
        is lost
    )


class Lease:
    def __init__(self) -> None:
        self.answer: bool | Exception = True

    def hold(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_loop_says_when_the_lead_begins_again() -> None:
    leads: list[int] = []
    runs: list[int] = []
    failure: list[Exception] = []

    def run_once() -> None:
        runs.append(1)
        if failure:
            raise failure[0]

    lease = Lease()
    loop = IntervalLoop(
        "reconciler", run_once, interval_s=1, lease=lease, on_lead=lambda: leads.append(1)
    )
    loop.tick()
    loop.tick()
    assert (len(leads), len(runs)) == (1, 2), "once when it starts leading, not every tick"
    lease.answer = False  # another replica leads
    loop.tick()
    lease.answer = True
    loop.tick()
    assert len(leads) == 2, "leading again after standing by"
    lease.answer = LeaseUnavailable("cannot try the leader lock: connection refused")
    loop.tick()
    lease.answer = True
    loop.tick()
    assert len(leads) == 3, "after the database could not be asked"
    failure.append(RuntimeError("a bug, not an outage"))
    loop.tick()
    failure.clear()
    loop.tick()
    assert len(leads) == 3, "an ordinary failure is no new lead"
    failure.append(OperationalError("SELECT 1", {}, Exception("connection refused")))
    loop.tick()
    failure.clear()
    loop.tick()
    assert len(leads) == 4, "run_once finding the database unreachable is one"
