"""What a reconciler pass costs: one listing of the engine and a fixed number of statements,
whatever the number of live bots; the live rows read through their partial index; and a bot
judged on the pass's snapshot is judged again on its fresh row before anything is done to it.

Against a fake orchestrator that counts calls, with the real database (PostgreSQL, or SQLite
in the second run) and a real Redis.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.schemas.api import BotCreate, CallbackIn
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.callbacks import apply_callback
from botfleet.manager.services.users import create_user
from botfleet.orchestrators.base import LaunchSpec, Workload, WorkloadState
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.nomad_standin import StandIn
from tests.support import RedisServer, wait_until

LIVE_QUERY_MARK = "NOT (status IN ('completed', 'failed'))"


class ListingHook(FakeOrchestrator):
    """Runs `after_list` once, right after a listing: something that happens mid-pass."""

    def __init__(self) -> None:
        super().__init__()
        self.after_list: Callable[[], None] | None = None

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        listed = super().list_workloads(labels)
        hook, self.after_list = self.after_list, None
        if hook is not None:
            hook()
        return listed


@pytest.fixture
def orchestrator() -> ListingHook:
    return ListingHook()


@pytest.fixture
def fleet(
    sessions: sessionmaker[Session], orchestrator: ListingHook, redis_server: RedisServer
) -> Iterator[FleetParts]:
    settings = Settings(redis_url=redis_server.url, heartbeat_s=1, heartbeats_missed=3)
    instance = build_fleet(sessions, orchestrator, settings)
    yield instance
    instance.close()


def active_bots(fleet: FleetParts, count: int) -> list[tuple[str, str]]:
    """`count` launched bots that said `started`: [(bot id, runtime ref)]."""
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=500)
        user_id = user.id
    bots = []
    for _ in range(count):
        with transaction(fleet.sessions) as session:
            bot = bot_records.create_bot(
                session,
                user_id=user_id,
                data=BotCreate(bot="demo", config={}),
                orchestrator="process",
            )
            bot_id = bot.id
        fleet.launcher.launch(bot_id)
        with transaction(fleet.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            apply_callback(session, bot, CallbackIn(event="started"))
            bots.append((bot_id, bot.runtime_ref or ""))
    return bots


def status(fleet: FleetParts, bot_id: str) -> tuple[str, str | None]:
    with fleet.sessions() as session:
        bot = bot_records.get_bot(session, bot_id, user_id=None)
        return bot.status.value, bot.status_reason


def heartbeat_at(fleet: FleetParts, bot_id: str, seconds_ago: float) -> None:
    """The bot's last heartbeat as the database records it."""
    with transaction(fleet.sessions) as session:
        session.execute(
            update(Bot)
            .where(Bot.id == bot_id)
            .values(last_heartbeat_at=utcnow() - timedelta(seconds=seconds_ago))
        )


class Statements:
    """Every SQL statement the engine runs while recording."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._note)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._note)

    def _note(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)


def engine_of(fleet: FleetParts) -> Engine:
    bind = fleet.sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def test_a_pass_lists_the_engine_once_and_asks_nothing_per_bot(
    fleet: FleetParts, orchestrator: ListingHook
) -> None:
    bots = active_bots(fleet, 12)
    (crashed, crashed_ref), *healthy = bots
    orchestrator.exit(crashed_ref, 1)
    orchestrator.calls.clear()
    assert fleet.reconciler().run_once() == []
    assert orchestrator.calls["list"] == 1, orchestrator.calls
    assert orchestrator.calls["inspect"] == 0, "no call per bot: the listing answered"
    # ...and the listing's word is acted on: the exited workload ended its bot.
    assert status(fleet, crashed) == ("failed", "workload_vanished")
    assert all(status(fleet, bot_id)[0] == "active" for bot_id, _ in healthy)


def test_a_pass_runs_as_many_statements_for_many_bots_as_for_few(fleet: FleetParts) -> None:
    """No query per bot (N+1) and no transaction per bot where nothing changes."""
    reconciler = fleet.reconciler()
    counts = []
    for more in (2, 20):
        active_bots(fleet, more)
        reconciler.run_once()  # settle: the first pass after a change may repair
        with Statements(engine_of(fleet)) as seen:
            assert reconciler.run_once() == []
        counts.append(len(seen))
    assert counts[0] == counts[1], f"statements per pass with 2 bots, then 22: {counts}"


def test_the_live_rows_are_read_through_the_partial_index(fleet: FleetParts) -> None:
    """The pass's query states the index's predicate word for word, the only way either
    database uses a partial index: ended bots, however many, are never read."""
    active_bots(fleet, 2)
    with Statements(engine_of(fleet)) as seen:
        fleet.reconciler().run_once()
    live_queries = [s for s in seen if LIVE_QUERY_MARK in s and s.lstrip().startswith("SELECT")]
    assert len(live_queries) == 1, seen
    engine = engine_of(fleet)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))  # a tiny table: judge usability
            plan = conn.exec_driver_sql("EXPLAIN " + live_queries[0]).all()
        else:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + live_queries[0]).all()
    assert "ix_bots_live" in str(plan), plan


def test_a_heartbeat_landing_mid_pass_saves_the_bot_judged_silent_on_the_snapshot(
    fleet: FleetParts, orchestrator: ListingHook
) -> None:
    """The pass reads every live row once; a bot that looks silent on that snapshot is read
    again before it is killed, and a heartbeat recorded meanwhile spares it."""
    (saved, _), (silent, silent_ref) = active_bots(fleet, 2)
    reconciler = fleet.reconciler()
    reconciler.run_once()
    assert reconciler.ctx.listening.since is not None
    reconciler.ctx.listening.since -= timedelta(seconds=60)  # listening for a minute
    heartbeat_at(fleet, saved, 10)  # both silent for longer than the 3 s budget
    heartbeat_at(fleet, silent, 10)
    # After the rows were read (the listing comes next), `saved`'s heartbeat lands.
    orchestrator.after_list = lambda: heartbeat_at(fleet, saved, 0)
    assert reconciler.run_once() == []
    assert status(fleet, saved) == ("active", "started"), "judged again on the fresh row"
    assert status(fleet, silent) == ("failed", "heartbeat_lost"), "the pass did judge silence"
    assert orchestrator.workloads[silent_ref].status.is_gone
    assert orchestrator.calls["stop"] == 1, "only the silent bot's workload was stopped"


def test_nomad_a_second_copy_of_a_bot_is_killed_by_the_ticks_one_listing(tmp_path: Path) -> None:
    """The reconciler asks the engine only through its listing: on Nomad, a job running a
    second allocation beside the bot (a replacement for a lost node, without the Disconnect
    block) must still be found and killed there, as an inspection of the bot did before."""
    standin = StandIn(tmp_path / "nomad", placement_delay_s=0.2).start()
    try:
        backend = NomadOrchestrator(
            NomadOrchestratorConfig(
                address=standin.url,
                driver="raw_exec",
                command=[sys.executable, "-c", "import time; time.sleep(60)"],
                job_prefix=f"tick-{uuid.uuid4().hex[:6]}-",
            )
        )
        spec = LaunchSpec(bot_id="bot", user_id="u", attempt=1, image=None, env={})
        job = backend.job_spec(spec, secret_names=[])
        job["TaskGroups"][0].pop("Disconnect", None)
        backend.client.jobs.register_job({"Job": job})
        ref = job["ID"]
        wait_until(lambda: backend.inspect(ref).state == WorkloadState.RUNNING, timeout=15)
        standin.disconnect(ref)
        wait_until(lambda: len(standin.live_tasks(ref)) == 2, timeout=10, what="a replacement")
        [original] = [a for a in standin.job(ref).allocs if not a.previous_alloc]  # type: ignore[union-attr]
        [listed] = [w for w in backend.list_workloads() if w.runtime_ref == ref]
        wait_until(
            lambda: [a.id for a in standin.live_tasks(ref)] == [original.id],
            timeout=10,
            what="the second copy killed by the listing, the original left running",
        )
        assert listed.status.state == backend.inspect(ref).state, (
            "the listing says what inspect says"
        )
    finally:
        standin.stop()
