"""Outages never kill healthy bots (issue 15, item 3).

Heartbeats sent while the manager is down, or while its database is unreachable, cannot be
recorded. The reconciler must not read that silence as the bots': after it becomes leader and
after the database comes back it waits a full heartbeat budget before judging silence, and it
judges with the database's clock only. The end-to-end tests stop the manager (and cut the
database) for `heartbeat_s * missed + 5` s; before the fix every bot failed `heartbeat_lost`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.clock import database_now
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.schemas.api import BotCreate, CallbackIn
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.callbacks import apply_callback
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.support import (
    FAST_SETTINGS,
    Manager,
    PortHold,
    RedisServer,
    database_kind,
    fresh_database_url,
    kill_leftover_bots,
    running_manager,
    transitions,
    wait_for_status,
)

HEARTBEAT_S = float(FAST_SETTINGS["BOTFLEET_HEARTBEAT_S"])
BUDGET_S = HEARTBEAT_S * int(FAST_SETTINGS["BOTFLEET_HEARTBEATS_MISSED"])
TICK_S = float(FAST_SETTINGS["BOTFLEET_RECONCILE_INTERVAL_S"])


# ---- the rule ---------------------------------------------------------------------------------


# ---- the loop ---------------------------------------------------------------------------------


# ---- the reconciler (fake engine, real database) ----------------------------------------------


@pytest.fixture
def fleet(sessions: sessionmaker[Session], redis_server: RedisServer) -> Iterator[FleetParts]:
    settings = Settings(redis_url=redis_server.url, heartbeat_s=1, heartbeats_missed=3)
    instance = build_fleet(sessions, FakeOrchestrator(), settings)
    yield instance
    instance.close()


def active_bot(fleet: FleetParts) -> str:
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=5)
        bot = bot_records.create_bot(
            session, user_id=user.id, data=BotCreate(bot="demo", config={}), orchestrator="process"
        )
        bot_id = bot.id
    fleet.launcher.launch(bot_id)
    with transaction(fleet.sessions) as session:
        bot = bot_records.lock_bot(session, bot_id)
        apply_callback(session, bot, CallbackIn(event="started"))
    return bot_id


def silence(fleet: FleetParts, bot_id: str, seconds: float) -> None:
    """The bot's last heartbeat was `seconds` ago (as after an outage of the manager)."""
    with transaction(fleet.sessions) as session:
        now = database_now(session)
        session.execute(
            update(Bot)
            .where(Bot.id == bot_id)
            .values(last_heartbeat_at=now - timedelta(seconds=seconds))
        )


def status(fleet: FleetParts, bot_id: str) -> tuple[str, str | None]:
    with fleet.sessions() as session:
        bot = bot_records.get_bot(session, bot_id, user_id=None)
        return bot.status.value, bot.status_reason


def test_a_new_leader_waits_a_budget_before_judging_silence(fleet: FleetParts) -> None:
    bot_id = active_bot(fleet)
    silence(fleet, bot_id, 60)  # a minute without heartbeats: the manager was down
    reconciler = fleet.reconciler()
    assert reconciler.run_once() == []
    assert status(fleet, bot_id) == ("active", "started"), "the silence was the manager's"
    assert fleet.orchestrator.calls["stop"] == 0  # type: ignore[attr-defined]

    # A full budget later (the listening began that long ago) and still no heartbeat: lost.
    listening = reconciler.ctx.listening
    assert listening.since is not None
    listening.since -= timedelta(seconds=fleet.settings.heartbeat_lost_after_s + 1)
    reconciler.run_once()
    assert status(fleet, bot_id) == ("failed", "heartbeat_lost")


def test_the_grace_restarts_after_a_new_lead_and_a_database_outage(fleet: FleetParts) -> None:
    budget = timedelta(seconds=fleet.settings.heartbeat_lost_after_s + 1)
    bot_id = active_bot(fleet)
    reconciler = fleet.reconciler()
    reconciler.run_once()
    listening = reconciler.ctx.listening

    silence(fleet, bot_id, 60)
    assert listening.since is not None
    listening.since -= budget
    reconciler.on_lead()  # the loop says this replica leads anew
    reconciler.run_once()
    assert status(fleet, bot_id)[0] == "active"

    assert listening.since is not None
    listening.since -= budget
    # A step that found the database unreachable: heartbeats could not be recorded either.
    reconciler._failed("reconcile_active", bot_id, OperationalError("x", {}, Exception("down")))
    reconciler.run_once()
    assert status(fleet, bot_id)[0] == "active"


@pytest.mark.skipif(database_kind() != "postgresql", reason="SQLite has one host, one clock")
def test_heartbeats_are_timed_by_the_databases_clock(
    fleet: FleetParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose own clock is an hour off still records heartbeats on the database's
    clock, the one the leader judges with."""
    bot_id = active_bot(fleet)
    skewed = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("botfleet.manager.core.clock.utcnow", lambda: skewed)
    monkeypatch.setattr("botfleet.manager.services.transitions.utcnow", lambda: skewed)
    with transaction(fleet.sessions) as session:
        bot = bot_records.lock_bot(session, bot_id)
        apply_callback(session, bot, CallbackIn(event="heartbeat"))
    with fleet.sessions() as session:
        recorded = bot_records.get_bot(session, bot_id, user_id=None).last_heartbeat_at
        now = database_now(session)
    assert recorded is not None and abs((now - recorded).total_seconds()) < 5


# ---- end to end: a real manager, real process bots -------------------------------------------


def start_bots(manager: Manager, n: int = 3) -> tuple[Any, list[str]]:
    _, client = manager.new_user()
    ids = [client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"] for _ in range(n)]
    for bot_id in ids:
        wait_for_status(client, bot_id, {"active"})
    return client, ids


def assert_all_active(client: Any, ids: list[str]) -> None:
    for bot_id in ids:
        bot = client.get(f"/bots/{bot_id}").json()
        assert bot["status"] == "active", (bot, transitions(client, bot_id))


def stop_all(client: Any, ids: list[str]) -> None:
    for bot_id in ids:
        client.post(f"/bots/{bot_id}/stop")
    for bot_id in ids:
        wait_for_status(client, bot_id, {"completed", "failed"})


@pytest.fixture
def restartable(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    with running_manager(tmp_path, redis_server.url, start=False) as instance:
        yield instance


def test_bots_outlive_a_manager_outage_longer_than_the_heartbeat_budget(
    restartable: Manager,
) -> None:
    restartable.start()
    client, ids = start_bots(restartable)
    restartable.stop(signal.SIGKILL)
    time.sleep(BUDGET_S + 2)  # every bot's heartbeats went unheard for longer than the budget
    restartable.start()
    restartable.judged_a_heartbeat_budget_after_leading()
    assert_all_active(client, ids)
    stop_all(client, ids)


class CuttableProxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection reset, new ones
    refused) and restore on the same port: a database outage as the manager sees it."""

    def __init__(self, target_port: int) -> None:
        self.hold = PortHold()  # the same port after each cut, never raced for
        self.port, self.target_port = self.hold.port, target_port
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = self.hold.listener()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, []
        if listener is not None:
            listener.close()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                # A close alone waits for the pipe thread blocked in recv() on this socket, which
                # may wait forever (an idle connection): the connection would live on, PostgreSQL
                # would keep its session (and the manager's leader lock). shutdown() ends it now.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.skipif(database_kind() != "postgresql", reason="cuts the PostgreSQL connection")
def test_bots_outlive_a_database_outage_longer_than_the_heartbeat_budget(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    direct = fresh_database_url(tmp_path)
    proxy = CuttableProxy(int(direct.rsplit(":", 1)[1].split("/")[0]))
    proxy.start()
    via_proxy = direct.replace(f":{proxy.target_port}/", f":{proxy.port}/")
    manager = Manager(data_dir=tmp_path / "manager", database_url=via_proxy,
                      redis_url=redis_server.url)  # fmt: skip
    try:
        manager.start()
        client, ids = start_bots(manager)
        proxy.cut()
        time.sleep(BUDGET_S + 2)  # longer than the budget
        proxy.start()
        manager.judged_a_heartbeat_budget_after_leading()  # the loops back off after failures
        assert_all_active(client, ids)
        stop_all(client, ids)
    finally:
        manager.release()
        proxy.cut()
        proxy.hold.release()
        kill_leftover_bots(manager.data_dir, backend="process", database_url=direct)
