"""A database that cannot be written is an outage, not silence (issue 27, item 5).

Measured before: with SQLite's write lock held 50 s (as a backup would), the reconciler killed a
healthy bot whose heartbeats waited in the manager's buffer, unwritable; its record said `active`
27 s more, then `workload_vanished` or `stopping (sigterm)`. Now silence is judged by what the
manager heard (its buffer counts), nobody is judged while the heartbeat writes fail (and a budget
after), and the reconciler stores `active → stopping (heartbeat_lost)` before it signals anything:
a decision it cannot store is no kill, and a bot stopped for silence ends `heartbeat_lost`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.reconciler.workloads import exit_grace_s
from botfleet.manager.core.clock import database_now
from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.listener_health import ListenerHealth
from botfleet.manager.core.models import Bot, BotAttempt, BotTransition, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.schemas.api import BotCreate, CallbackIn
from botfleet.manager.schemas.restart import RestartPolicy
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.callbacks import apply_callback
from botfleet.manager.services.users import create_user
from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.support import (
    FAST_SETTINGS,
    Manager,
    RedisServer,
    kill_leftover_bots,
    running_manager,
    transitions,
    wait_for_status,
    wait_until,
)

BUDGET_S = float(FAST_SETTINGS["BOTFLEET_HEARTBEAT_S"]) * int(
    FAST_SETTINGS["BOTFLEET_HEARTBEATS_MISSED"]
)
SILENT = ("active", "stopping", "heartbeat_lost", "reconciler")
ENDED_SILENT = ("stopping", "failed", "heartbeat_lost", "reconciler")


# ---- the reconciler (fake engine, real database) ----------------------------------------------


@pytest.fixture
def fleet(sessions: sessionmaker[Session], redis_server: RedisServer) -> Iterator[FleetParts]:
    settings = Settings(redis_url=redis_server.url, heartbeat_s=1, heartbeats_missed=3)
    instance = build_fleet(sessions, FakeOrchestrator(), settings)
    yield instance
    instance.close()


def fake(fleet: FleetParts) -> FakeOrchestrator:
    orchestrator = fleet.orchestrator
    assert isinstance(orchestrator, FakeOrchestrator)
    return orchestrator


def active_bot(fleet: FleetParts, *, restart: RestartPolicy | None = None) -> str:
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=5)
        data = BotCreate(bot="demo", config={}, restart=restart)
        bot = bot_records.create_bot(session, user_id=user.id, data=data, orchestrator="process")
        bot_id = bot.id
    fleet.launcher.launch(bot_id)
    with transaction(fleet.sessions) as session:
        apply_callback(session, bot_records.lock_bot(session, bot_id), CallbackIn(event="started"))
    return bot_id


def silent_for(fleet: FleetParts, bot_id: str, seconds: float) -> None:
    """The bot's stored heartbeat is `seconds` old."""
    with transaction(fleet.sessions) as session:
        at = database_now(session) - timedelta(seconds=seconds)
        session.execute(update(Bot).where(Bot.id == bot_id).values(last_heartbeat_at=at))


def read(fleet: FleetParts, bot_id: str) -> Bot:
    with fleet.sessions() as session:
        return bot_records.get_bot(session, bot_id, user_id=None)


def moves(fleet: FleetParts, bot_id: str) -> list[tuple[str, str, str, str]]:
    with fleet.sessions() as session:
        rows = session.scalars(
            select(BotTransition).where(BotTransition.bot_id == bot_id).order_by(BotTransition.id)
        )
        return [(r.from_status, r.to_status, r.reason, r.source) for r in rows]


def listening_for_a_minute(fleet: FleetParts, heard: HeartbeatBuffer | None = None) -> Any:
    """A reconciler that has listened long enough to judge silence."""
    reconciler = fleet.reconciler(heard)
    reconciler.run_once()
    listening = reconciler.ctx.listening
    assert listening.since is not None
    listening.since -= timedelta(seconds=60)
    return reconciler


def test_a_heartbeat_heard_but_not_stored_is_not_silence(fleet: FleetParts) -> None:
    bot_id = active_bot(fleet)
    buffer = HeartbeatBuffer(max_entries=10)
    reconciler = listening_for_a_minute(fleet, buffer)
    silent_for(fleet, bot_id, 60)
    buffer.record(bot_id, "digest")  # heard now; the write has not happened (or cannot)
    assert reconciler.run_once() == []
    assert read(fleet, bot_id).status == "active"
    assert fake(fleet).calls["stop"] == 0


def test_no_silence_is_judged_while_heartbeat_writes_fail_nor_a_budget_after(
    fleet: FleetParts,
) -> None:
    """A bot this replica did not hear (it may have reached another replica, whose writes fail
    the same way) is not judged while this replica's writes fail, nor a budget after."""
    bot_id = active_bot(fleet)
    buffer = HeartbeatBuffer(max_entries=10)
    reconciler = listening_for_a_minute(fleet, buffer)
    silent_for(fleet, bot_id, 60)

    def unwritable() -> Session:
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    buffer.record("another-bot", "digest")
    with pytest.raises(OperationalError):
        buffer.flush(unwritable)  # type: ignore[arg-type]
    assert buffer.writes_failing(stalled_after_s=60)
    reconciler.run_once()
    assert read(fleet, bot_id).status == "active", "writes fail: silence is not judged"

    buffer.flush(fleet.sessions)  # the writes work again
    assert not buffer.writes_failing(stalled_after_s=60)
    reconciler.run_once()
    assert read(fleet, bot_id).status == "active", "a budget after the writes came back"
    assert fake(fleet).calls["stop"] == 0

    listening = reconciler.ctx.listening
    listening.since -= timedelta(seconds=fleet.settings.heartbeat_lost_after_s + 1)
    reconciler.run_once()
    assert (read(fleet, bot_id).status, read(fleet, bot_id).status_reason) == (
        "failed",
        "heartbeat_lost",
    )


def test_no_silence_is_judged_while_the_bots_listener_turns_connections_away(
    fleet: FleetParts,
) -> None:
    """Another bot holds every place of the bots' listener: a heartbeat refused at the door is
    not silence, until a full budget has been heard after the listener had room again."""
    bot_id = active_bot(fleet)
    reconciler = listening_for_a_minute(fleet)
    door = ListenerHealth()
    reconciler.ctx = dataclasses.replace(reconciler.ctx, callback_listener=door)
    door.configure(cap=10)
    door.turned_away()
    silent_for(fleet, bot_id, 60)
    reconciler.run_once()
    assert read(fleet, bot_id).status == "active", "refused at the door: silence is not judged"

    door.turned_away(now=time.monotonic() - fleet.settings.heartbeat_s - 1)  # room again
    reconciler.run_once()
    assert read(fleet, bot_id).status == "active", "a budget after the listener had room"
    reconciler.ctx.listening.since -= timedelta(seconds=fleet.settings.heartbeat_lost_after_s + 1)
    reconciler.run_once()
    assert (read(fleet, bot_id).status, read(fleet, bot_id).status_reason) == (
        "failed",
        "heartbeat_lost",
    )


def test_the_decision_is_stored_before_the_workload_is_signalled(fleet: FleetParts) -> None:
    bot_id = active_bot(fleet)
    orchestrator = fake(fleet)
    seen_at_stop: list[tuple[str, str | None]] = []
    real_stop = orchestrator.stop

    def stop(runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        bot = read(fleet, bot_id)  # another connection: only what was committed
        seen_at_stop.append((bot.status.value, bot.status_reason))
        return real_stop(runtime_ref, grace_s=grace_s)

    orchestrator.stop = stop  # type: ignore[method-assign]
    reconciler = listening_for_a_minute(fleet)
    silent_for(fleet, bot_id, 60)
    assert reconciler.run_once() == []
    assert seen_at_stop == [("stopping", "heartbeat_lost")]
    assert moves(fleet, bot_id)[-2:] == [SILENT, ENDED_SILENT]
    assert read(fleet, bot_id).exit_code == 137


def test_a_decision_that_cannot_be_stored_signals_nothing(
    fleet: FleetParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot_id = active_bot(fleet)
    reconciler = listening_for_a_minute(fleet)
    silent_for(fleet, bot_id, 60)

    def unwritable(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("UPDATE bots", {}, Exception("database or disk is full"))

    monkeypatch.setattr("botfleet.manager.background.reconciler.context.transition", unwritable)
    errors = reconciler.run_once()
    assert errors and "disk is full" in errors[0]
    assert fake(fleet).calls["stop"] == 0, "nothing was signalled"
    assert read(fleet, bot_id).status == "active"


@pytest.mark.parametrize("how", ["vanished", "exited_0", "reported_exit_0", "killed_after_grace"])
def test_a_bot_stopped_for_silence_ends_heartbeat_lost_however_its_workload_goes(
    fleet: FleetParts, how: str
) -> None:
    """The engine could not confirm the kill: the bot stays `stopping` (heartbeat_lost), and
    whatever then happens to its workload, it ends `heartbeat_lost`."""
    bot_id = active_bot(fleet)
    ref = read(fleet, bot_id).runtime_ref
    assert ref is not None
    orchestrator = fake(fleet)
    orchestrator.ignores_stop = True
    reconciler = listening_for_a_minute(fleet)
    silent_for(fleet, bot_id, 60)
    reconciler.run_once()
    assert (read(fleet, bot_id).status, read(fleet, bot_id).status_reason) == (
        "stopping",
        "heartbeat_lost",
    )
    if how == "vanished":
        orchestrator.vanish(ref)
    elif how == "exited_0":
        orchestrator.exit(ref, 0)
    elif how == "reported_exit_0":
        with transaction(fleet.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            apply_callback(session, bot, CallbackIn(event="leaving", reason="sigterm"))
            apply_callback(session, bot, CallbackIn(event="exited", exit_code=0))
        orchestrator.exit(ref, 0)  # as a real runtime: its process ends after its report
    else:
        with transaction(fleet.sessions) as session:
            at = utcnow() - timedelta(seconds=fleet.settings.stop_grace_s + 1)
            session.execute(update(Bot).where(Bot.id == bot_id).values(stop_requested_at=at))
        orchestrator.ignores_stop = False
    reconciler.run_once()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason) == ("failed", "heartbeat_lost"), moves(fleet, bot_id)
    silenced, ended = moves(fleet, bot_id)[-2:]
    assert (silenced, ended[:3]) == (SILENT, ENDED_SILENT[:3])  # source: runtime or reconciler


def test_the_restart_policy_still_relaunches_a_bot_lost_to_silence(fleet: FleetParts) -> None:
    """The decision is the next attempt, stored before the old attempt's workload is stopped:
    `active → starting` (what the contract's table has), never through `stopping`."""
    bot_id = active_bot(fleet, restart=RestartPolicy(max_retries=1, backoff_s=60))
    old_ref = read(fleet, bot_id).runtime_ref
    assert old_ref is not None
    reconciler = listening_for_a_minute(fleet)
    silent_for(fleet, bot_id, 60)
    reconciler.run_once()
    assert moves(fleet, bot_id)[-1] == ("active", "starting", "restarting", "reconciler")
    bot = read(fleet, bot_id)
    assert (bot.status, bot.attempt, bot.runtime_ref) == ("starting", 2, None)
    assert fake(fleet).workloads[old_ref].status.state == WorkloadState.EXITED, (
        "the silent attempt's workload was not stopped"
    )


def test_a_restart_decided_for_silence_is_not_lost_when_the_engine_cannot_stop(
    fleet: FleetParts,
) -> None:
    """The engine ignores the stop: the decision stands (attempt 2 waits its backoff) and the
    old attempt's workload is an older attempt's, which the workload pass stops as an orphan."""
    bot_id = active_bot(fleet, restart=RestartPolicy(max_retries=1, backoff_s=60))
    old_ref = read(fleet, bot_id).runtime_ref
    assert old_ref is not None
    orchestrator = fake(fleet)
    orchestrator.ignores_stop = True
    reconciler = listening_for_a_minute(fleet)
    silent_for(fleet, bot_id, 60)
    reconciler.run_once()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.attempt) == ("starting", 2)
    assert orchestrator.workloads[old_ref].status.state == WorkloadState.RUNNING
    with transaction(fleet.sessions) as session:  # attempt 1 ended longer ago than its grace
        at = utcnow() - timedelta(seconds=exit_grace_s(fleet.settings) + 1)
        session.execute(update(BotAttempt).where(BotAttempt.bot_id == bot_id).values(ended_at=at))
    orchestrator.ignores_stop = False
    reconciler.run_once()
    assert orchestrator.workloads[old_ref].status.state == WorkloadState.EXITED


# ---- end to end: a real manager, real process bots -------------------------------------------


def stored_heartbeat_age(database_url: str, bot_id: str) -> float:
    """How old the bot's stored heartbeat is, read beside the manager (reads pass the lock)."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            at = session.scalar(select(Bot.last_heartbeat_at).where(Bot.id == bot_id))
            now = database_now(session)
    finally:
        engine.dispose()
    assert at is not None
    return (now - at).total_seconds()


def process_alive(runtime_ref: str) -> bool:
    stat = Path(f"/proc/{runtime_ref.split('-')[0]}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def sqlite_manager(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    """A manager over SQLite whatever the kind under test: the write lock is SQLite's."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    manager = Manager(data_dir=tmp_path / "manager", database_url=url, redis_url=redis_server.url)
    try:
        manager.start()
        yield manager
    finally:
        manager.release()
        kill_leftover_bots(manager.data_dir, backend="process", database_url=url)


def test_a_write_lock_held_past_the_heartbeat_budget_kills_no_healthy_bot(
    sqlite_manager: Manager,
) -> None:
    manager = sqlite_manager
    _, client = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    before = wait_for_status(client, bot_id, {"active"})
    manager.judged_a_heartbeat_budget_after_leading()  # it judges silence from now on

    backup = sqlite3.connect(manager.database_url.removeprefix("sqlite:///"), timeout=10)
    backup.isolation_level = None
    backup.execute("BEGIN IMMEDIATE")  # as a backup would: every writer waits
    try:
        locked_at = datetime.now(UTC)
        # Reconciler passes begun two budgets into the lock: the stored heartbeat is that old.
        manager.loop_runs("reconciler", after=locked_at + timedelta(seconds=2 * BUDGET_S))
        assert stored_heartbeat_age(manager.database_url, bot_id) > BUDGET_S, "writes held"
        during = client.get(f"/bots/{bot_id}").json()
        assert during["status"] == "active", transitions(client, bot_id)
    finally:
        backup.rollback()
        backup.close()
    released_at = datetime.now(UTC)
    manager.loop_runs("heartbeats", after=released_at)
    manager.loop_runs("reconciler", after=released_at + timedelta(seconds=BUDGET_S + 1))

    after = client.get(f"/bots/{bot_id}").json()
    assert (after["status"], after["attempt"], after["runtime_ref"]) == (
        "active",
        before["attempt"],
        before["runtime_ref"],
    ), transitions(client, bot_id)
    assert [t[1] for t in transitions(client, bot_id)] == ["starting", "active"]
    assert process_alive(before["runtime_ref"]), "the same process runs on"
    assert stored_heartbeat_age(manager.database_url, bot_id) < BUDGET_S, "heartbeats stored"
    client.post(f"/bots/{bot_id}/stop")
    wait_for_status(client, bot_id, {"completed", "failed"})


def test_a_frozen_bot_is_recorded_stopping_before_it_is_killed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """SIGSTOP: the bot is silent for real. Its record says `stopping (heartbeat_lost)` while
    its process still exists (SIGTERM waits on a stopped process; SIGKILL comes
    `BOTFLEET_KILL_AFTER_S` later), and it ends `failed (heartbeat_lost)`."""
    env = {"BOTFLEET_KILL_AFTER_S": "6"}
    with running_manager(tmp_path, redis_server.url, extra_env=env) as manager:
        _, client = manager.new_user()
        bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
        ref = wait_for_status(client, bot_id, {"active"})["runtime_ref"]
        os.kill(int(ref.split("-")[0]), signal.SIGSTOP)
        stopping = wait_for_status(client, bot_id, {"stopping", "failed", "completed"})
        assert (stopping["status"], stopping["status_reason"]) == ("stopping", "heartbeat_lost")
        assert process_alive(ref), "recorded stopping before the kill"
        done = wait_for_status(client, bot_id, {"failed", "completed"}, timeout=30)
        assert (done["status"], done["status_reason"]) == ("failed", "heartbeat_lost")
        assert [t for t in transitions(client, bot_id) if t[0] != "requested"][-2:] == [
            SILENT,
            ENDED_SILENT,
        ]
        wait_until(lambda: not process_alive(ref), timeout=15, what="the frozen bot killed")
