"""Firing schedules against the real database (PostgreSQL, or SQLite in the second run) and a
fake orchestrator, with the pass's time given as the services take it (`now`): two passes
racing for one fire time fire it once; a missed fire time is skipped, or run once within its
window; `replace` stops the previous bot; a refusal of POST /bots is the firing's, and a
template that queues waits in the queue; the template's secrets reach the bot sealed; a due stop
stops the bot as the scheduler."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.models import Bot, BotTransition, Event
from botfleet.manager.core.schedule_models import Schedule, ScheduleFiring
from botfleet.manager.core.settings import Settings
from botfleet.manager.migrate import upgrade
from botfleet.manager.schemas.schedules import ScheduleCreate
from botfleet.manager.services.schedule_firing import ScheduleFirer
from botfleet.manager.services.schedules import create_schedule
from botfleet.manager.services.unit_of_work import unit_of_work
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet, post_callback
from tests.support import RedisServer, drop_database, fresh_database_url, wait_until

NINE_BERLIN = datetime(2026, 1, 19, 8, tzinfo=UTC)  # Monday 09:00 CET


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[FleetParts]:
    """One database for the module (each test makes its own user and schedule)."""
    url = fresh_database_url(tmp_path_factory.mktemp("schedules"))
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    instance = build_fleet(sessions, FakeOrchestrator(), Settings(redis_url=redis_server.url))
    yield instance
    instance.close()
    engine.dispose()
    drop_database(url)


@pytest.fixture(scope="module")
def firer(fleet: FleetParts) -> ScheduleFirer:
    return ScheduleFirer(sessions=fleet.sessions, requests=fleet.bots)


def schedule(fleet: FleetParts, *, max_bots: int = 10, **fields: Any) -> str:
    """A working-hours schedule (09:00 Europe/Berlin) created before Monday's fire time."""
    body = {"name": "s", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin",
            "template": {"bot": "demo", "config": {}}, **fields}  # fmt: skip
    with unit_of_work(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u-{uuid.uuid4().hex[:12]}",
                              max_concurrent_bots=max_bots)  # fmt: skip
        created = create_schedule(
            session,
            user_id=user.id,
            data=ScheduleCreate(**body),
            requests=fleet.bots,
            now=NINE_BERLIN - timedelta(hours=1),
        )
        assert created.next_fire_at == NINE_BERLIN
        return created.id


def firings(fleet: FleetParts, schedule_id: str) -> list[ScheduleFiring]:
    with fleet.sessions() as session:
        query = select(ScheduleFiring).where(ScheduleFiring.schedule_id == schedule_id)
        return list(session.scalars(query.order_by(ScheduleFiring.id)))


def bot(fleet: FleetParts, bot_id: str | None) -> Bot:
    with fleet.sessions() as session:
        found = session.get(Bot, bot_id)
        assert found is not None
        return found


def test_two_passes_racing_fire_a_time_once(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet)
    now = NINE_BERLIN + timedelta(seconds=0.3)
    outcomes: list[str | None] = []
    start = threading.Barrier(2)

    def one_pass() -> None:
        start.wait()
        outcomes.append(firer.fire(schedule_id, now))

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [None, "started"]
    [fired] = firings(fleet, schedule_id)
    started = bot(fleet, fired.bot_id)
    assert started.schedule_id == schedule_id
    assert fired.fired_for == NINE_BERLIN and fired.stop_at is None
    with fleet.sessions() as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None and row.next_fire_at == NINE_BERLIN + timedelta(days=1)
        assert (row.last_outcome, row.last_bot_id) == ("started", started.id)
        events = session.scalars(select(Event).where(Event.bot_id == started.id)).all()
    assert [e.data for e in events if e.kind == "schedule"] == [
        {"schedule_id": schedule_id, "fired_for": NINE_BERLIN.isoformat()}
    ]


def test_the_template_secrets_reach_the_bot_sealed(fleet: FleetParts, firer: ScheduleFirer) -> None:
    template = {"bot": "demo", "config": {}, "secrets": {"token": "s3cret"}}
    schedule_id = schedule(fleet, template=template)
    with fleet.sessions() as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None and "secrets" not in row.template
        assert "s3cret" not in str(row.template_secrets_sealed)
    assert firer.fire(schedule_id, NINE_BERLIN) == "started"
    started = bot(fleet, firings(fleet, schedule_id)[0].bot_id)
    assert started.secrets_sealed and fleet.box.open(started.secrets_sealed) == {"token": "s3cret"}


def test_missed_skip_starts_nothing(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet, window_end="17:00")
    assert firer.fire(schedule_id, NINE_BERLIN + timedelta(minutes=30)) == "missed"
    [missed] = firings(fleet, schedule_id)
    assert (missed.outcome, missed.reason, missed.bot_id) == ("missed", "missed", None)


def test_missed_run_once_within_the_window(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet, window_end="17:00", missed="run_once")
    assert firer.fire(schedule_id, NINE_BERLIN + timedelta(minutes=30)) == "started"
    [fired] = firings(fleet, schedule_id)
    assert fired.stop_at == datetime(2026, 1, 19, 16, tzinfo=UTC)  # 17:00 CET
    assert fired.stop_reason == "schedule_window"


def test_missed_run_once_after_the_window(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet, window_end="17:00", missed="run_once")
    assert firer.fire(schedule_id, datetime(2026, 1, 19, 16, 30, tzinfo=UTC)) == "missed"
    assert [(f.outcome, f.reason) for f in firings(fleet, schedule_id)] == [
        ("missed", "window_over")
    ]


def test_replace_stops_the_previous_bot(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet, overlap="replace")
    assert firer.fire(schedule_id, NINE_BERLIN) == "started"
    first = firings(fleet, schedule_id)[0].bot_id
    assert first is not None
    make_active(fleet, first)
    assert firer.fire(schedule_id, NINE_BERLIN + timedelta(days=1)) == "started"
    stop = last_transition(fleet, first)
    assert (stop.to_status, stop.reason, stop.actor) == (
        "stopping",
        "schedule_replaced",
        "scheduler",
    )


def test_over_the_limit_the_firing_fails_with_its_code(
    fleet: FleetParts, firer: ScheduleFirer
) -> None:
    schedule_id = schedule(fleet, overlap="allow", max_bots=1)
    assert firer.fire(schedule_id, NINE_BERLIN) == "started"
    assert firer.fire(schedule_id, NINE_BERLIN + timedelta(days=1)) == "failed"
    refused = firings(fleet, schedule_id)[-1]
    assert (refused.outcome, refused.reason, refused.bot_id) == (
        "failed",
        "concurrency_limit",
        None,
    )
    with fleet.sessions() as session:
        count = session.scalars(select(Bot.id).where(Bot.schedule_id == schedule_id)).all()
    assert len(count) == 1, "the refused bot was rolled back, the schedule's firing kept"


def test_over_the_limit_a_template_that_queues_waits(
    fleet: FleetParts, firer: ScheduleFirer
) -> None:
    template = {"bot": "demo", "config": {}, "queue": True}
    schedule_id = schedule(fleet, overlap="allow", max_bots=1, template=template)
    assert firer.fire(schedule_id, NINE_BERLIN) == "started"
    assert firer.fire(schedule_id, NINE_BERLIN + timedelta(days=1)) == "queued"
    waiting = bot(fleet, firings(fleet, schedule_id)[-1].bot_id)
    assert (waiting.status, waiting.schedule_id) == ("queued", schedule_id)


def test_a_due_stop_stops_the_bot_as_the_scheduler(fleet: FleetParts, firer: ScheduleFirer) -> None:
    schedule_id = schedule(fleet, duration_s=600)
    assert firer.fire(schedule_id, NINE_BERLIN) == "started"
    [fired] = firings(fleet, schedule_id)
    assert fired.bot_id is not None and fired.stop_reason == "schedule_duration"
    make_active(fleet, fired.bot_id)
    assert firer.due_stops(NINE_BERLIN + timedelta(seconds=599)) == []
    assert firer.due_stops(NINE_BERLIN + timedelta(seconds=600)) == [fired.id]
    assert firer.stop(fired.id, NINE_BERLIN + timedelta(seconds=600))
    assert not firer.stop(fired.id, NINE_BERLIN + timedelta(seconds=601)), "once"
    stop = last_transition(fleet, fired.bot_id)
    assert (stop.to_status, stop.reason, stop.actor) == (
        "stopping",
        "schedule_duration",
        "scheduler",
    )


def make_active(fleet: FleetParts, bot_id: str) -> None:
    """The launch the firing queued after its commit, then the runtime's `started`."""
    wait_until(lambda: bot(fleet, bot_id).status == "starting", what="the launch")
    post_callback(fleet, bot_id, "started")


def last_transition(fleet: FleetParts, bot_id: str) -> BotTransition:
    with transaction(fleet.sessions) as session:
        query = select(BotTransition).where(BotTransition.bot_id == bot_id)
        return list(session.scalars(query.order_by(BotTransition.id)))[-1]
