"""Health rules fired by their loop (manager/background/health_rules.py) against a fake engine,
with the real database (PostgreSQL, then SQLite) and Redis: a written report feeds the report
rules' memory in its own transaction; a firing is a `health_rule` transition decided under the
bot's lock before the workload is touched; a restart stops the old workload and launches the
next attempt; a stop goes the API's way (a `leave`); a manager that could not hear fires no
silence rule; the rules' restarts leave the restart policy its retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from botfleet.manager.background.health_rules import HealthRules
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import BotAttempt, Command, utcnow
from botfleet.manager.hot_path import report_batches
from botfleet.manager.hot_path.report_batches import Report, write_reports
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.health_rules import keep_rules, observe_written_report
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts
from tests.integration.services.test_reconciler import (  # noqa: F401 - fleet, orchestrator: fixtures
    callback,
    fleet,
    new_bot,
    orchestrator,
    read,
)
from tests.support import wait_until

S = BotStatus
REPORT_RULE = {"when": {"report": "connected", "equals": False, "for_s": 5}, "then": "restart"}


@pytest.fixture
def rules(
    fleet: FleetParts,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[HealthRules]:
    monkeypatch.setattr(report_batches, "on_rules_report", observe_written_report)
    yield HealthRules(sessions=fleet.sessions, settings=fleet.settings,
                      launcher=fleet.launcher, bots=fleet.bots)  # fmt: skip


def active_bot(parts: FleetParts, health: list[dict[str, Any]], **body: Any) -> tuple[str, str]:
    """A launched, `started` bot with `health` as its rules (as POST /bots copies them)."""
    bot_id = new_bot(parts, **body)
    with transaction(parts.sessions) as session:
        keep_rules(bot_records.lock_bot(session, bot_id), health, None)
    parts.launcher.launch(bot_id)
    callback(parts, bot_id, "started")
    return bot_id, read(parts, bot_id).runtime_ref or ""


def heard_for(rules: HealthRules, seconds: float) -> None:
    """As if this replica had been listening for `seconds` already."""
    rules.ctx.listening.lost()
    rules.ctx.listening.observe(utcnow() - timedelta(seconds=seconds))


def backdate(parts: FleetParts, bot_id: str, seconds: float) -> None:
    """As if the attempt (and what its rules remember) were `seconds` older."""
    with transaction(parts.sessions) as session:
        bot = bot_records.lock_bot(session, bot_id)
        bot.active_at = utcnow() - timedelta(seconds=seconds)
        state = dict(bot.health_state or {})
        if state.get("holding"):
            earlier = (utcnow() - timedelta(seconds=seconds)).isoformat()
            state["holding"] = {index: earlier for index in state["holding"]}
            bot.health_state = state


def health_moves(parts: FleetParts, bot_id: str) -> list[tuple[str, str, str, str, int]]:
    with parts.sessions() as session:
        rows = bot_records.list_transitions(session, bot_id)[0]
    return [(t.from_status, t.to_status, t.actor or "", t.detail, t.attempt)
            for t in rows if t.reason == "health_rule"]  # fmt: skip


def send_report(parts: FleetParts, bot_id: str, data: dict[str, Any]) -> None:
    digest = read(parts, bot_id).token_hash or ""
    now = time.monotonic()
    assert write_reports(parts.sessions, [Report(bot_id, digest, data, now)], now=now) == 1


def test_a_report_rule_restarts_the_bot_once_its_value_held(
    fleet: FleetParts,  # noqa: F811
    rules: HealthRules,
    orchestrator: FakeOrchestrator,  # noqa: F811
) -> None:
    quiet = {"when": {"every_s": 3600}, "then": "stop"}
    bot_id, old_ref = active_bot(fleet, [quiet, REPORT_RULE])
    other_id, _ = active_bot(fleet, [quiet, REPORT_RULE])  # its value never holds
    send_report(fleet, bot_id, {"connected": True})
    assert read(fleet, bot_id).health_state is None  # nothing holds: nothing written
    send_report(fleet, bot_id, {"connected": False})
    send_report(fleet, other_id, {"connected": True})
    memory = read(fleet, bot_id).health_state
    assert memory is not None and memory["attempt"] == 1 and list(memory["holding"]) == ["1"]

    heard_for(rules, 3600)
    assert rules.run_once() == []  # held for less than 5 s: nothing yet
    assert read(fleet, bot_id).status == S.ACTIVE
    backdate(fleet, bot_id, 6)
    backdate(fleet, other_id, 6)
    assert rules.run_once() == []

    bot = read(fleet, bot_id)
    assert bot.status == S.STARTING and bot.attempt == 2 and bot.status_reason == "health_rule"
    assert health_moves(fleet, bot_id) == [
        ("active", "starting", "reconciler",
         "health rule 2: report connected == false for 5 s; attempt 1 restarted as attempt 2", 2)
    ]  # fmt: skip
    assert bot.health_state == {"restarts": 1}  # the new attempt remembers nothing
    with fleet.sessions() as session:
        first = session.get(BotAttempt, (bot_id, 1))
        assert first is not None and first.outcome == "health_rule" and first.ended_at
    # The old workload is stopped, then attempt 2 launched at once (not after its fallback).
    relaunched = wait_until(lambda: read(fleet, bot_id).runtime_ref, timeout=10, what="attempt 2")
    assert relaunched != old_ref and old_ref not in orchestrator.running()
    assert relaunched in orchestrator.running()
    assert read(fleet, other_id).status == S.ACTIVE and read(fleet, other_id).attempt == 1
    assert health_moves(fleet, other_id) == []

    # Attempt 2 starts with no memory: the same value must hold for 5 s again.
    callback(fleet, bot_id, "started")
    send_report(fleet, bot_id, {"connected": False})
    assert rules.run_once() == []
    assert read(fleet, bot_id).attempt == 2
    # A firing judged on a row that moved meanwhile (here: attempt 1, gone) does nothing.
    backdate(fleet, bot_id, 6)
    assert rules.fire(bot_id, 1) is None
    assert read(fleet, bot_id).attempt == 2 and len(health_moves(fleet, bot_id)) == 1


def test_no_report_stops_the_bot_but_only_after_hearing_for_that_long(
    fleet: FleetParts,  # noqa: F811
    rules: HealthRules,
) -> None:
    rule = {"when": {"no_report_for_s": 30}, "then": "stop"}
    bot_id, ref = active_bot(fleet, [rule])
    backdate(fleet, bot_id, 3600)  # silent for an hour...
    assert rules.run_once() == []  # ...but this replica has only just started listening
    assert read(fleet, bot_id).status == S.ACTIVE
    heard_for(rules, 20)
    assert rules.run_once() == []
    rules.on_lead()  # became leader again (or the database came back): heard nothing since
    heard_for(rules, 0)
    assert rules.run_once() == []
    assert read(fleet, bot_id).status == S.ACTIVE

    heard_for(rules, 31)
    assert rules.run_once() == []
    bot = read(fleet, bot_id)
    assert bot.status == S.STOPPING and bot.attempt == 1 and bot.runtime_ref == ref
    assert health_moves(fleet, bot_id) == [
        ("active", "stopping", "reconciler", "health rule 1: no report for 30 s", 1)
    ]
    with fleet.sessions() as session:
        leaves = session.scalars(select(Command).where(Command.bot_id == bot_id)).all()
    assert [(c.action, c.actor) for c in leaves] == [("leave", "reconciler")]
    callback(fleet, bot_id, "exited", exit_code=0)
    assert read(fleet, bot_id).status == S.COMPLETED


def test_a_periodic_restart_leaves_the_restart_policy_its_retries(
    fleet: FleetParts,  # noqa: F811
    rules: HealthRules,
) -> None:
    rule = {"when": {"every_s": 60}, "then": "restart"}
    restart = {"max_retries": 1, "backoff_s": 0.0}
    bot_id, _ = active_bot(fleet, [rule], restart=restart)
    for attempt in (1, 2):
        assert rules.run_once() == []
        assert read(fleet, bot_id).attempt == attempt  # not 60 s yet
        backdate(fleet, bot_id, 61)
        assert rules.run_once() == []
        assert read(fleet, bot_id).status == S.STARTING
        wait_until(lambda: read(fleet, bot_id).runtime_ref, timeout=10, what="the relaunch")
        callback(fleet, bot_id, "started")
    assert read(fleet, bot_id).health_state == {"restarts": 2}
    assert [m[4] for m in health_moves(fleet, bot_id)] == [2, 3]

    # Attempt 3 crashes: its one retry is still there (the rules' restarts are not counted).
    callback(fleet, bot_id, "exited", exit_code=1)
    bot = read(fleet, bot_id)
    assert bot.status == S.STARTING and bot.status_reason == "restarting" and bot.attempt == 4
