"""The queue and the timers against the real database (PostgreSQL, or SQLite in the second run)
and a fake orchestrator, each timer tick run by the test (`Timers.run_once`): bots over a limit
wait in order with their positions, the highest priority is admitted first, a stop while queued
cancels, a timeout fails; capacities per label and fleet-wide (0 is zero); twenty parallel
starts against a limit of five give exactly five, and the rest drain five at a time; and what
is due (`start_at`, `max_duration_s`, a restart backoff) fires on the next tick."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from botfleet.manager.background.timers import Timers
from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.errors import TooMany
from botfleet.manager.core.models import Bot, BotTransition, Event, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import HOLDS_CAPACITY, BotStatus
from botfleet.manager.migrate import upgrade
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services import capacities, queue
from botfleet.manager.services.unit_of_work import unit_of_work
from botfleet.manager.services.users import create_user
from tests import support
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet, exited, post_callback
from tests.support import RedisServer, fresh_database_url, wait_until

S = BotStatus
HOLDING = [s.value for s in HOLDS_CAPACITY]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[FleetParts]:
    """One database for the module (each test makes its own users)."""
    url = fresh_database_url(Path(tmp_path_factory.mktemp("queue-db")))
    upgrade(url)
    engine = make_engine(url)
    instance = build_fleet(
        make_session_factory(engine), FakeOrchestrator(), Settings(redis_url=redis_server.url)
    )
    yield instance
    instance.close()
    engine.dispose()
    support.drop_database(url)


@pytest.fixture(scope="module")
def timers(fleet: FleetParts) -> Timers:
    return Timers(
        sessions=fleet.sessions, settings=fleet.settings, launcher=fleet.launcher, bots=fleet.bots
    )


def new_user(fleet: FleetParts, limit: int) -> str:
    with unit_of_work(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=limit)
        return user.id


def start(fleet: FleetParts, user_id: str, **body: Any) -> Bot:
    with unit_of_work(fleet.sessions) as session:
        data = BotCreate(bot="demo", **{"config": {}, **body})
        return fleet.bots.start_bot(session, user_id=user_id, data=data)


def read(fleet: FleetParts, bot_id: str) -> Bot:
    with fleet.sessions() as session:
        found = session.get(Bot, bot_id)
        assert found is not None
        return found


def launched(fleet: FleetParts, bot_id: str) -> Bot:
    """The bot once the launcher's thread has launched it (`starting` with a workload)."""
    return wait_until(
        lambda: (bot := read(fleet, bot_id)).runtime_ref is not None and bot,
        timeout=10,
        interval=0.02,
        what=f"bot {bot_id} launched",
    )


def finish(fleet: FleetParts, bot_id: str) -> None:
    """The bot runs and finishes on its own (`completed`): its slot frees."""
    launched(fleet, bot_id)
    post_callback(fleet, bot_id, "started")
    exited(fleet, bot_id, 0)
    assert read(fleet, bot_id).status == S.COMPLETED


def backdate(fleet: FleetParts, bot_id: str, column: str, seconds: float) -> None:
    with transaction(fleet.sessions) as session:
        bot = session.get(Bot, bot_id)
        setattr(bot, column, utcnow() - timedelta(seconds=seconds))


def moves(fleet: FleetParts, bot_id: str) -> list[tuple[str, str, str, str]]:
    with fleet.sessions() as session:
        rows = session.scalars(
            select(BotTransition).where(BotTransition.bot_id == bot_id).order_by(BotTransition.id)
        )
        return [(t.from_status, t.to_status, t.reason, t.source) for t in rows]


def positions(fleet: FleetParts, *bot_ids: str) -> dict[str, int]:
    with fleet.sessions() as session:
        return queue.positions_of(session, [read(fleet, i) for i in bot_ids])


def test_over_a_limit_bots_wait_in_order_and_the_highest_priority_goes_first(
    fleet: FleetParts, timers: Timers
) -> None:
    user = new_user(fleet, 1)
    running = start(fleet, user)
    with pytest.raises(TooMany):  # without the queue: 429 `concurrency_limit`, as ever
        start(fleet, user)
    low = start(fleet, user, queue=True)
    high = start(fleet, user, queue=True, priority=5)
    last = start(fleet, user, queue=True)
    assert {b.status for b in (low, high, last)} == {S.QUEUED}
    # a page's positions and each bot's own agree
    assert positions(fleet, low.id, high.id, last.id) == {high.id: 1, low.id: 2, last.id: 3}
    assert [positions(fleet, b.id)[b.id] for b in (high, low, last)] == [1, 2, 3]
    with fleet.sessions() as session:
        event = session.scalar(select(Event).where(Event.bot_id == high.id, Event.kind == "queued"))
        assert event is not None and (event.data["position"], event.data["priority"]) == (1, 5)

    timers.run_once()  # the user is full: nobody is admitted
    assert read(fleet, high.id).status == S.QUEUED
    fleet.bots.stop_bot(bot_id=low.id, user_id=user)  # a stop while queued cancels it
    assert moves(fleet, low.id) == [("queued", "completed", "cancelled", "api")]

    finish(fleet, running.id)
    timers.run_once()
    assert moves(fleet, high.id)[0] == ("queued", "requested", "admitted", "scheduler")
    launched(fleet, high.id)
    assert read(fleet, last.id).status == S.QUEUED
    assert positions(fleet, last.id) == {last.id: 1}


def test_a_bot_not_admitted_in_time_fails(fleet: FleetParts, timers: Timers) -> None:
    user = new_user(fleet, 0)  # a limit of 0: none may run
    waiting = start(fleet, user, queue=True, queue_timeout_s=60)
    patient = start(fleet, user, queue=True)
    timers.run_once()
    assert read(fleet, waiting.id).status == S.QUEUED
    backdate(fleet, waiting.id, "queued_at", 61)
    backdate(fleet, patient.id, "queued_at", 3600)
    timers.run_once()
    assert moves(fleet, waiting.id) == [("queued", "failed", "queue_timeout", "scheduler")]
    assert read(fleet, patient.id).status == S.QUEUED  # no timeout: it waits on


def test_capacities_per_label_and_fleet_wide(fleet: FleetParts, timers: Timers) -> None:
    user = new_user(fleet, 50)
    pool = {"pool": "x"}
    with unit_of_work(fleet.sessions) as session:
        label_cap = capacities.set_capacity(session, label=("pool", "x"), max_concurrent=1).id
    try:
        first = start(fleet, user, labels=pool, queue=True)
        second = start(fleet, user, labels=pool, queue=True)
        unlabelled = start(fleet, user, queue=True)  # not under the label's capacity
        assert (first.status, second.status, unlabelled.status) == (
            S.REQUESTED,
            S.QUEUED,
            S.REQUESTED,
        )
        assert second.status_reason == "capacity"
        with pytest.raises(TooMany):
            start(fleet, user, labels=pool)
        with unit_of_work(fleet.sessions) as session:  # 0 is zero, not unlimited
            capacities.set_capacity(session, label=("pool", "x"), max_concurrent=0)
        finish(fleet, first.id)
        timers.run_once()
        assert read(fleet, second.id).status == S.QUEUED
        with unit_of_work(fleet.sessions) as session:  # raised: admitted on the next tick
            capacities.set_capacity(session, label=("pool", "x"), max_concurrent=1)
        timers.run_once()
        assert read(fleet, second.id).status != S.QUEUED

        with unit_of_work(fleet.sessions) as session:
            fleet_cap = capacities.set_capacity(session, label=None, max_concurrent=0).id
            used = capacities.usage(session, capacities.all_capacities(session))
            assert used[label_cap] == capacities.CapacityUse(in_use=1, queued=0)
        held = start(fleet, user, queue=True)
        assert (held.status, held.status_reason) == (S.QUEUED, "capacity")
        with unit_of_work(fleet.sessions) as session:
            capacities.remove_capacity(session, fleet_cap)
        timers.run_once()
        assert read(fleet, held.id).status != S.QUEUED
    finally:
        with unit_of_work(fleet.sessions) as session:
            for row in capacities.all_capacities(session):
                capacities.remove_capacity(session, row.id)


def test_parallel_starts_admit_exactly_the_limit_and_the_rest_drain(
    fleet: FleetParts, timers: Timers
) -> None:
    user = new_user(fleet, 5)
    with ThreadPoolExecutor(20) as pool:
        bots = list(pool.map(lambda _: start(fleet, user, queue=True), range(20)))
    assert sorted(b.status.value for b in bots).count("queued") == 15
    ids = [b.id for b in bots]

    def holding() -> list[str]:
        with fleet.sessions() as session:
            query = select(Bot.id).where(Bot.user_id == user, Bot.status.in_(HOLDING))
            return list(session.scalars(query))

    for _ in range(4):  # five at a time: the first five, then three admissions of five
        running = holding()
        assert len(running) == 5
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda bot_id: finish(fleet, bot_id), running))
        timers.run_once()
    with fleet.sessions() as session:
        done = session.scalar(
            select(func.count()).where(Bot.id.in_(ids), Bot.status == S.COMPLETED)
        )
    assert done == 20 and holding() == []


def test_the_timers_fire_what_is_due(fleet: FleetParts, timers: Timers) -> None:
    user = new_user(fleet, 10)
    later = start(fleet, user, start_at=utcnow() + timedelta(hours=1))
    timers.run_once()
    assert read(fleet, later.id).status == S.REQUESTED  # not yet
    backdate(fleet, later.id, "start_at", 0.1)
    timers.run_once()
    launched(fleet, later.id)

    timed = start(fleet, user, max_duration_s=60)
    launched(fleet, timed.id)
    post_callback(fleet, timed.id, "started")
    backdate(fleet, timed.id, "active_at", 61)
    timers.run_once()
    assert moves(fleet, timed.id)[-1] == ("active", "stopping", "max_duration", "scheduler")

    crashing = start(fleet, user, restart={"max_retries": 1, "backoff_s": 0})
    first = launched(fleet, crashing.id).runtime_ref
    post_callback(fleet, crashing.id, "started")
    exited(fleet, crashing.id, 1)
    assert read(fleet, crashing.id).next_attempt_at is not None
    timers.run_once()
    again = wait_until(
        lambda: (bot := read(fleet, crashing.id)).runtime_ref not in (None, first) and bot,
        timeout=10,
        interval=0.02,
        what="the restart's relaunch",
    )
    assert (again.attempt, again.next_attempt_at) == (2, None)
