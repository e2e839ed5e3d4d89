"""A kind's virtualenv is built while its bots wait `requested` (issue 28): never inside
`starting`, where the build would count against the launch and start timeouts and the
reconciler would judge the launch lost. One build per kind and version however often the
reconciler asks; its success launches every waiting bot, its failure fails them with pip's
last words. Against a fake engine whose build waits on an Event, with the real database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.schemas.kinds import KindCreate
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services import kinds
from botfleet.manager.services.users import create_user
from botfleet.orchestrators.base import KindEnvFailed
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.support import RedisServer, wait_until

PACKAGE = {"wheels": ["/srv/wheels/slowbot-0.1.0-py3-none-any.whl"]}
PYTHON = "/envs/slowbot-1/bin/python"


class SlowEnvs(FakeOrchestrator):
    """An engine that builds kinds' envs, each build waiting for `finish` (then failing with
    `failure` when set)."""

    builds_kind_envs = True

    def __init__(self) -> None:
        super().__init__()
        self.built: set[tuple[str, int]] = set()
        self.builds: list[tuple[str, int]] = []
        self.finish = threading.Event()
        self.failure: str | None = None

    def kind_python(self, name: str, version: int, package: Mapping[str, Any]) -> str | None:
        return PYTHON if (name, version) in self.built else None

    def build_kind_env(self, name: str, version: int, package: Mapping[str, Any]) -> str:
        self.builds.append((name, version))
        assert self.finish.wait(timeout=60), "the test never finished the build"
        if self.failure is not None:
            raise KindEnvFailed("kind slowbot v1: pip install failed (exit 1)",
                                output_tail=self.failure)  # fmt: skip
        self.built.add((name, version))
        return PYTHON


@pytest.fixture
def engine() -> Iterator[SlowEnvs]:
    engine = SlowEnvs()
    yield engine
    engine.finish.set()  # a build still waiting ends with the test


@pytest.fixture
def fleet(
    sessions: sessionmaker[Session], engine: SlowEnvs, redis_server: RedisServer
) -> Iterator[FleetParts]:
    settings = Settings(
        redis_url=redis_server.url,
        heartbeat_s=1,
        heartbeats_missed=3,
        launch_timeout_s=0.01,  # a build inside `starting` would be judged a lost launch at once
        start_timeout_s=0.05,
        stop_grace_s=10,
    )
    instance = build_fleet(sessions, engine, settings)
    yield instance
    instance.close()


def new_kind_bot(fleet: FleetParts, name: str = "slowbot") -> str:
    with transaction(fleet.sessions) as session:
        if kinds.find(session, name) is None:
            body = {"name": name, "run": {"python": "slowbot:Bot"}, "package": PACKAGE}
            kinds.register(session, KindCreate.model_validate(body))
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=50)
        bot = bot_records.create_bot(
            session, user_id=user.id, data=BotCreate(bot=name, config={}), orchestrator="process"
        )
        bot.kind_version = 1
        return bot.id


def read(fleet: FleetParts, bot_id: str) -> Bot:
    with fleet.sessions() as session:
        return bot_records.get_bot(session, bot_id, user_id=None)


def reconcile(fleet: FleetParts, passes: int = 3) -> None:
    """Reconciler passes, each long after the launch and start timeouts: none isolated an
    error."""
    reconciler = fleet.reconciler()
    for _ in range(passes):
        with transaction(fleet.sessions) as session:  # every timeout long past
            for bot in session.scalars(select(Bot).where(Bot.started_at.is_not(None))):
                bot.started_at -= timedelta(seconds=600)
        assert reconciler.run_once() == []


def test_a_slow_build_keeps_its_bots_requested_and_builds_once(
    fleet: FleetParts, engine: SlowEnvs
) -> None:
    first, second = new_kind_bot(fleet), new_kind_bot(fleet)
    fleet.launcher.launch(first)  # returns at once: the build runs on its own threads
    fleet.launcher.launch(second)
    wait_until(lambda: engine.builds, timeout=10, what="the build's start")
    reconcile(fleet)  # each pass asks `launch` again
    for bot_id in (first, second):
        bot = read(fleet, bot_id)
        assert (bot.status, bot.attempt, bot.runtime_ref) == ("requested", 0, None)
    assert engine.builds == [("slowbot", 1)], "one build, however often the launch is asked"
    assert engine.calls["launch"] == 0 and engine.calls["stop"] == 0

    engine.finish.set()
    for bot_id in (first, second):
        wait_until(lambda b=bot_id: read(fleet, b).runtime_ref, timeout=10, what="the launch")
        bot = read(fleet, bot_id)
        assert (bot.status, bot.attempt) == ("starting", 1)
    assert sorted(spec.python for spec in engine.specs) == [PYTHON, PYTHON]
    assert engine.builds == [("slowbot", 1)]
    fleet.launcher.launch(new_kind_bot(fleet))  # a ready env: launched straight away
    assert engine.calls["launch"] == 3 and engine.builds == [("slowbot", 1)]


def test_a_failed_build_fails_its_waiting_bots_with_pips_words(
    fleet: FleetParts, engine: SlowEnvs
) -> None:
    bot_ids = [new_kind_bot(fleet), new_kind_bot(fleet)]
    for bot_id in bot_ids:
        fleet.launcher.launch(bot_id)
    wait_until(lambda: engine.builds, timeout=10, what="the build's start")
    reconcile(fleet, passes=1)
    engine.failure = "ERROR: Could not find a version that satisfies the requirement slowbot"
    engine.finish.set()
    for bot_id in bot_ids:
        bot = wait_until(
            lambda b=bot_id: (bot := read(fleet, b)).status == "failed" and bot,
            timeout=10,
            what="the bot's failure",
        )
        assert (bot.status_reason, bot.attempt, bot.runtime_ref) == ("kind_env_failed", 0, None)
        with fleet.sessions() as session:
            last = bot_records.list_transitions(session, bot_id)[0][-1]
        assert (last.from_status, last.source) == ("requested", "orchestrator")
        assert "pip install failed" in last.detail and engine.failure in last.detail
    assert engine.builds == [("slowbot", 1)] and engine.calls["launch"] == 0
    reconcile(fleet, passes=1)  # nothing left waiting: no second build
    assert engine.builds == [("slowbot", 1)]


def test_a_restart_waits_for_a_rebuilt_env_without_losing_its_turn(
    fleet: FleetParts, engine: SlowEnvs
) -> None:
    """A restart whose env is gone (a new runtime wheel): `relaunch` builds it and leaves
    `next_attempt_at` due, so the reconciler neither times the bot out nor judges its launch
    lost; once built, the attempt launches."""
    engine.built.add(("slowbot", 1))
    bot_id = new_kind_bot(fleet)
    fleet.launcher.launch(bot_id)
    ref = read(fleet, bot_id).runtime_ref
    assert ref
    del engine.workloads[ref]  # the first attempt ended
    engine.built.clear()  # the manager's runtime changed: the env's digest is another
    due = utcnow() - timedelta(seconds=1)
    with transaction(fleet.sessions) as session:  # the restart policy's next attempt, due
        bot = bot_records.lock_bot(session, bot_id)
        bot.runtime_ref, bot.next_attempt_at, bot.attempt = None, due, 2
    fleet.launcher.relaunch(bot_id)
    wait_until(lambda: engine.builds, timeout=10, what="the build's start")
    reconcile(fleet)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.runtime_ref, bot.next_attempt_at) == ("starting", None, due)
    assert engine.builds == [("slowbot", 1)] and engine.calls["launch"] == 1

    engine.finish.set()
    wait_until(lambda: read(fleet, bot_id).runtime_ref, timeout=10, what="the relaunch")
    bot = read(fleet, bot_id)
    assert (bot.status, bot.attempt, bot.next_attempt_at) == ("starting", 2, None)
    assert engine.specs[-1].python == PYTHON and engine.specs[-1].attempt == 2
