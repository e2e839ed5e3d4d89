"""The exit watch (manager/background/exit_watch.py) against a fake engine and the real database:
a bot whose runtime reported `exited` ends only once the engine confirms its workload is gone,
with the runtime's outcome; an engine that cannot tell is waited for; a workload that outlives
the exit grace is stopped. Time is a manual clock: no test sleeps for something not to happen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.exit_watch import FIRST_CHECK_S, LIST_ABOVE, ExitWatch
from botfleet.manager.background.reconciler import exit_grace_s
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.callbacks import AwaitedExit
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet, post_callback
from tests.support import RedisServer, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def orchestrator() -> FakeOrchestrator:
    return FakeOrchestrator()


@pytest.fixture
def fleet(
    sessions: sessionmaker[Session], orchestrator: FakeOrchestrator, redis_server: RedisServer
) -> Iterator[FleetParts]:
    settings = Settings(redis_url=redis_server.url, stop_grace_s=4, kill_after_s=1)
    instance = build_fleet(sessions, orchestrator, settings)
    yield instance
    instance.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watch(fleet: FleetParts, clock: Clock) -> Iterator[ExitWatch]:
    instance = ExitWatch(
        sessions=fleet.sessions, settings=fleet.settings, launcher=fleet.launcher, clock=clock
    )
    yield instance
    instance.close()


def active_bot(fleet: FleetParts) -> tuple[str, str]:
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=50)
        bot = bot_records.create_bot(
            session, user_id=user.id, data=BotCreate(bot="demo", config={}), orchestrator="process"
        )
        bot_id = bot.id
    fleet.launcher.launch(bot_id)
    post_callback(fleet, bot_id, "started")
    return bot_id, read(fleet, bot_id).runtime_ref or ""


def read(fleet: FleetParts, bot_id: str) -> Bot:
    with fleet.sessions() as session:
        return bot_records.get_bot(session, bot_id, user_id=None)


def reported(fleet: FleetParts, bot_id: str, code: int = 0, **fields: object) -> AwaitedExit:
    awaited = post_callback(fleet, bot_id, "exited", exit_code=code, **fields)
    assert awaited is not None, "a bot with a workload waits for it"
    return awaited


def look(watch: ExitWatch, clock: Clock, after_s: float = FIRST_CHECK_S) -> None:
    clock.now += after_s
    watch.check_due()


def test_a_reported_exit_ends_the_bot_once_its_workload_is_gone(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bot_id, ref = active_bot(fleet)
    watch.watch(reported(fleet, bot_id, 3, reason="crashed", detail="boom"))
    assert read(fleet, bot_id).status == "active", "the callback alone ends nothing"
    look(watch, clock)
    assert read(fleet, bot_id).status == "active", "its workload still runs"
    orchestrator.exit(ref, 137)  # however it went (here: killed), the report is the outcome
    look(watch, clock, 1.0)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "crashed", 3)
    with fleet.sessions() as session:
        moves = bot_records.list_transitions(session, bot_id)[0]
    last = moves[-1]
    assert (last.from_status, last.to_status, last.source, last.detail) == (
        "active",
        "failed",
        "runtime",
        "boom",
    )
    assert watch.pending() == []


def test_an_engine_that_cannot_tell_is_waited_for(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bot_id, ref = active_bot(fleet)
    watch.watch(reported(fleet, bot_id))
    orchestrator.exit(ref, 0)
    orchestrator.unavailable = True
    look(watch, clock)
    assert read(fleet, bot_id).status == "active", "an engine that does not answer"
    orchestrator.inspect_says_not_found, orchestrator.unavailable = True, False
    look(watch, clock, 1.0)  # "not found" from inspect, yet a listing still shows it
    assert read(fleet, bot_id).status == "active"
    assert len(watch.pending()) == 1
    orchestrator.inspect_says_not_found = False
    look(watch, clock, 1.0)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("completed", "finished", 0)


def test_a_workload_outliving_the_exit_grace_is_stopped_then_the_bot_ends(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bot_id, ref = active_bot(fleet)
    fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    watch.watch(reported(fleet, bot_id, 0, reason="left"))
    look(watch, clock)
    grace_s = exit_grace_s(fleet.settings)
    while clock.now < 1000.0 + grace_s - 1:
        look(watch, clock, 1.0)
    assert orchestrator.calls["stop"] == 0, "within the exit grace"
    assert read(fleet, bot_id).status == "stopping"
    look(watch, clock, 2.0)
    wait_until(lambda: orchestrator.calls["stop"] == 1, timeout=10, what="the stop")
    wait_until(lambda: orchestrator.workloads[ref].status.is_gone, timeout=10, what="the kill")

    def ended() -> bool:
        look(watch, clock, 1.0)
        return read(fleet, bot_id).status != "stopping"

    wait_until(ended, timeout=10, what="the end once the workload is gone")
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("completed", "left", 0)


def test_an_exit_whose_attempt_moved_on_is_dropped(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bot_id, ref = active_bot(fleet)
    awaited = reported(fleet, bot_id)
    watch.watch(awaited)
    with transaction(fleet.sessions) as session:  # as if the reconciler ended it meanwhile
        bot_records.lock_bot(session, bot_id).attempt = 2
    orchestrator.exit(ref, 0)
    look(watch, clock)
    assert watch.pending() == []
    assert read(fleet, bot_id).status == "active", "not this watch's to end"


def test_exits_reported_before_a_restart_are_resumed(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bot_id, ref = active_bot(fleet)
    awaited = reported(fleet, bot_id)  # the replica that heard it is gone: nobody watches
    watch.resume()
    assert watch.pending() == [awaited]
    orchestrator.exit(ref, 0)
    look(watch, clock)
    assert read(fleet, bot_id).status == "completed"


def test_many_exits_due_at_once_take_one_listing(
    fleet: FleetParts, orchestrator: FakeOrchestrator, watch: ExitWatch, clock: Clock
) -> None:
    bots = [active_bot(fleet) for _ in range(LIST_ABOVE + 2)]
    for bot_id, ref in bots:
        watch.watch(reported(fleet, bot_id))
        orchestrator.exit(ref, 0)
    orchestrator.calls.clear()
    look(watch, clock)
    assert (orchestrator.calls["list"], orchestrator.calls["inspect"]) == (1, 0)
    assert {read(fleet, bot_id).status for bot_id, _ in bots} == {"completed"}
