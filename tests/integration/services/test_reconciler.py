"""The reconciler and the fleet's launch path against a fake orchestrator, with the real
database (PostgreSQL, or SQLite in the second run) and a real Redis.

A reconciler pass never raises (one bot's error must not stop the others), so the tests drive
it through `StrictReconciler`, which fails the test on any error a pass isolated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.reconciler import exit_grace_s
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, BotAttempt, BotTransition, Command, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator, launch_failed
from tests.fleet_parts import FleetParts, build_fleet, exited, finish_exit, post_callback
from tests.support import RedisServer


@pytest.fixture
def orchestrator() -> FakeOrchestrator:
    return FakeOrchestrator()


@pytest.fixture
def fleet(
    sessions: sessionmaker[Session], orchestrator: FakeOrchestrator, redis_server: RedisServer
) -> Iterator[FleetParts]:
    settings = Settings(
        redis_url=redis_server.url,
        heartbeat_s=1,
        heartbeats_missed=3,
        start_timeout_s=30,
        stop_grace_s=10,
        command_ttl_s=60,
        command_retry_s=1,
    )
    instance = build_fleet(sessions, orchestrator, settings)
    yield instance
    instance.close()


class StrictReconciler:
    """The reconciler's passes, each asserting that it isolated no error: a pass logs and
    carries on past an exception, which would otherwise let a broken repair pass unseen."""

    def __init__(self, fleet: FleetParts) -> None:
        self.reconciler = fleet.reconciler()
        self.housekeeping = fleet.housekeeping()
        self.exit_grace_s = exit_grace_s(fleet.settings)

    def run_once(self, *, tolerating: str | None = None) -> None:
        """A full pass of both loops; `tolerating` names the one error expected (an engine that
        is down)."""
        errors = self.reconciler.run_once() + self.housekeeping.run_once()
        assert [e for e in errors if tolerating is None or tolerating not in e] == []

    def reconcile_starting(self) -> None:
        assert self.reconciler.reconcile(BotStatus.STARTING) == []

    def reconcile_active(self) -> None:
        assert self.reconciler.reconcile(BotStatus.ACTIVE) == []

    def reconcile_stopping(self) -> None:
        assert self.reconciler.reconcile(BotStatus.STOPPING) == []

    def reconcile_workloads(self) -> None:
        assert self.reconciler.reconcile_workloads() == []

    def reconcile_commands(self) -> None:
        self.housekeeping.reconcile_commands()  # a chore raises straight through


@pytest.fixture
def reconciler(fleet: FleetParts) -> StrictReconciler:
    return StrictReconciler(fleet)


def new_bot(fleet: FleetParts, **body: object) -> str:
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u{utcnow().timestamp()}", max_concurrent_bots=50)
        data = BotCreate(bot="demo", **{"config": {}, **body})
        sealed = fleet.box.seal(data.secrets) if data.secrets else None
        bot = bot_records.create_bot(
            session, user_id=user.id, data=data, orchestrator="process", sealed_secrets=sealed
        )
        return bot.id


def launched_bot(fleet: FleetParts, *, active: bool = True) -> tuple[str, str]:
    bot_id = new_bot(fleet)
    fleet.launcher.launch(bot_id)
    if active:
        callback(fleet, bot_id, "started")
    return bot_id, read(fleet, bot_id).runtime_ref or ""


def callback(fleet: FleetParts, bot_id: str, event: str, **fields: object) -> None:
    """A callback as a real runtime sends it: after `exited`, its workload exits with the code
    it reported and the exit watch ends the bot (`tests.fleet_parts.exited`)."""
    if event == "exited":
        code = fields.pop("exit_code")
        assert isinstance(code, int)
        exited(fleet, bot_id, code, **fields)
    else:
        post_callback(fleet, bot_id, event, **fields)


def read(fleet: FleetParts, bot_id: str) -> Bot:
    with fleet.sessions() as session:
        return bot_records.get_bot(session, bot_id, user_id=None)


def backdate(fleet: FleetParts, bot_id: str, seconds: float, *columns: str) -> None:
    with transaction(fleet.sessions) as session:
        bot = bot_records.lock_bot(session, bot_id)
        for column in columns:
            setattr(bot, column, utcnow() - timedelta(seconds=seconds))


def last_transition(fleet: FleetParts, bot_id: str) -> BotTransition:
    with fleet.sessions() as session:
        return bot_records.list_transitions(session, bot_id)[0][-1]


def test_launch_hands_the_contract_environment_to_the_backend(
    fleet: FleetParts, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet, config={"a": 1}, secrets={"api_key": "s3cret"}, labels={"team": "x"})
    fleet.launcher.launch(bot_id)
    spec = orchestrator.specs[0]
    assert set(spec.env) | set(spec.secret_env) == {
        "BOTFLEET_BOT_ID",
        "BOTFLEET_BOT_TOKEN",
        "BOTFLEET_CALLBACK_URL",
        "BOTFLEET_REDIS_URL",
        "BOTFLEET_COMMAND_CHANNEL",
        "BOTFLEET_BOT",
        "BOTFLEET_BOT_CONFIG",
        "BOTFLEET_BOT_SECRETS",
        "BOTFLEET_HEARTBEAT_S",
        "BOTFLEET_LEAVE_GRACE_S",
    }
    # The Redis URL carries a password (the test Redis requires one, as production does).
    assert set(spec.secret_env) == {
        "BOTFLEET_BOT_TOKEN",
        "BOTFLEET_BOT_SECRETS",
        "BOTFLEET_REDIS_URL",
    }
    assert spec.env["BOTFLEET_COMMAND_CHANNEL"] == f"bot_commands:{bot_id}"
    assert "s3cret" not in str(spec.workload_labels()), "secrets never go into labels"
    bot = read(fleet, bot_id)
    assert bot.status == "starting" and bot.attempt == 1 and bot.runtime_ref


def test_a_stop_recorded_before_launch_wins(
    fleet: FleetParts, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet)
    fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    fleet.launcher.launch(bot_id)
    assert orchestrator.calls["launch"] == 0
    assert read(fleet, bot_id).status == "completed"
    assert last_transition(fleet, bot_id).reason == "cancelled"


def test_launch_errors_fail_the_bot_with_the_engines_reason(
    fleet: FleetParts, orchestrator: FakeOrchestrator
) -> None:
    orchestrator.launch_error = launch_failed("image_not_found")
    bot_id = new_bot(fleet)
    fleet.launcher.launch(bot_id)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason) == ("failed", "image_not_found")
    assert last_transition(fleet, bot_id).source == Source.ORCHESTRATOR


def test_workload_gone_while_active_fails_with_the_engines_exit_code(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, ref = launched_bot(fleet)
    orchestrator.exit(ref, 137)
    reconciler.reconcile_active()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "workload_vanished", 137)
    assert last_transition(fleet, bot_id).source == "reconciler"


def test_no_reaping_without_positive_proof(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, _ = launched_bot(fleet)
    orchestrator.unavailable = True  # the engine cannot be asked
    reconciler.run_once(tolerating="the engine does not answer")
    assert read(fleet, bot_id).status == "active"
    orchestrator.unavailable = False
    orchestrator.inspect_says_not_found = True  # but the listing still shows it
    reconciler.run_once()
    assert read(fleet, bot_id).status == "active"
    assert orchestrator.calls["stop"] == 0


def test_not_found_confirmed_by_listing_is_vanished(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, ref = launched_bot(fleet)
    orchestrator.vanish(ref)
    reconciler.reconcile_active()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "workload_vanished", None)


def test_start_timeout(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, ref = launched_bot(fleet, active=False)
    reconciler.reconcile_starting()
    assert read(fleet, bot_id).status == "starting", "within the start timeout"
    backdate(fleet, bot_id, 31, "started_at")
    reconciler.reconcile_starting()
    assert (read(fleet, bot_id).status, read(fleet, bot_id).status_reason) == (
        "failed",
        "start_timeout",
    )
    assert orchestrator.workloads[ref].status.is_gone, "the workload was stopped"


def test_heartbeat_lost(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, ref = launched_bot(fleet)
    # This reconciler has heard heartbeats for a minute (a fresh one waits a budget first:
    # tests/integration/resilience/test_outage_grace.py).
    reconciler.reconciler.ctx.listening.since = utcnow() - timedelta(seconds=60)
    backdate(fleet, bot_id, 2, "last_heartbeat_at")
    reconciler.reconcile_active()
    assert read(fleet, bot_id).status == "active", "2 s is within 3 missed heartbeats"
    backdate(fleet, bot_id, 4, "last_heartbeat_at")
    reconciler.reconcile_active()
    assert read(fleet, bot_id).status_reason == "heartbeat_lost"
    assert orchestrator.workloads[ref].status.is_gone


def test_stopping_past_grace_is_killed_then_completed_only_once_gone(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, _ = launched_bot(fleet)
    fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    reconciler.reconcile_stopping()
    assert read(fleet, bot_id).status == "stopping", "still within the grace"
    backdate(fleet, bot_id, 11, "stop_requested_at")
    orchestrator.ignores_stop = True
    reconciler.reconcile_stopping()
    assert read(fleet, bot_id).status == "stopping", "not gone, so not completed"
    orchestrator.ignores_stop = False
    reconciler.reconcile_stopping()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == (
        "completed",
        "killed_after_grace",
        137,
    )


def test_orphans_are_stopped_and_ended_workloads_removed(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    orphan = orchestrator.launch(fleet.launcher.launch_spec(_ghost_bot(), "token"))
    bot_id, ref = launched_bot(fleet)
    callback(fleet, bot_id, "exited", exit_code=0)
    orchestrator.exit(ref, 0)
    reconciler.reconcile_workloads()
    assert orchestrator.workloads[orphan].status.is_gone, "a workload with no record is stopped"
    assert ref not in orchestrator.workloads, "an ended, recorded workload is removed"
    assert read(fleet, bot_id).exit_code == 0


def _ghost_bot() -> Bot:
    return Bot(id="ghost", user_id="nobody", bot="demo", config={}, labels={}, attempt=1)


def test_unacked_commands_are_republished_then_expire(
    fleet: FleetParts, reconciler: StrictReconciler
) -> None:
    bot_id, _ = launched_bot(fleet)
    command = fleet.bots.reconfigure(bot_id=bot_id, user_id=read(fleet, bot_id).user_id, config={})
    assert command.status == "pending", "nobody subscribed, so not delivered"
    an_instant_ago = utcnow() - timedelta(seconds=1)
    assert update_command(fleet, command.id, next_publish_at=an_instant_ago).publish_count == 1
    reconciler.reconcile_commands()
    assert update_command(fleet, command.id).publish_count == 2, "published again when due"
    update_command(fleet, command.id, expires_at=an_instant_ago)
    reconciler.reconcile_commands()
    assert update_command(fleet, command.id).status == "expired"


def update_command(fleet: FleetParts, command_id: str, **values: object) -> Command:
    """Set columns of a command (none: just read it) and return it."""
    with transaction(fleet.sessions) as session:
        row = session.get(Command, command_id)
        assert row is not None
        for column, value in values.items():
            setattr(row, column, value)
        return row


def test_terminal_states_have_no_way_out(fleet: FleetParts) -> None:
    from botfleet.manager.lifecycle import TERMINAL, TRANSITIONS

    assert not [pair for pair in TRANSITIONS if pair[0] in TERMINAL]
    bot_id, _ = launched_bot(fleet)
    callback(fleet, bot_id, "exited", exit_code=3)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.exit_code, bot.token_hash) == (BotStatus.FAILED, 3, None)


def test_a_workload_whose_ref_was_never_saved_is_adopted(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id, ref = launched_bot(fleet)
    with transaction(fleet.sessions) as session:
        bot_records.lock_bot(session, bot_id).runtime_ref = None  # as if the manager crashed
    reconciler.reconcile_workloads()
    assert read(fleet, bot_id).runtime_ref == ref
    assert orchestrator.running() == [ref], "adopted, not stopped as an orphan"


def test_restart_policy_relaunches_failed_attempts_then_gives_up(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet, restart={"max_retries": 2, "backoff_s": 0})
    fleet.launcher.launch(bot_id)
    refs = []
    for attempt in (1, 2, 3):
        bot = read(fleet, bot_id)
        assert (bot.status, bot.attempt) == ("starting", attempt)
        refs.append(bot.runtime_ref)
        callback(fleet, bot_id, "started")
        callback(fleet, bot_id, "exited", exit_code=10 + attempt, reason="crashed")
        reconciler.reconcile_starting()  # relaunches once the backoff (0 s) is over
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "crashed", 13)
    assert orchestrator.calls["launch"] == 3 and len(set(refs)) == 3
    with fleet.sessions() as session:
        rows = session.scalars(select(BotAttempt).where(BotAttempt.bot_id == bot_id)).all()
        got = sorted((a.attempt, a.runtime_ref, a.exit_code, a.outcome) for a in rows)
    assert got == [(n, refs[n - 1], 10 + n, "crashed") for n in (1, 2, 3)]
    reasons = [t.reason for t in _transitions(fleet, bot_id)]
    assert reasons.count("restarting") == 2


def test_restart_waits_for_its_backoff_and_a_stop_meanwhile_ends_it(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet, restart={"max_retries": 3, "backoff_s": 60})
    fleet.launcher.launch(bot_id)
    callback(fleet, bot_id, "started")
    callback(fleet, bot_id, "exited", exit_code=1)
    reconciler.reconcile_starting()
    assert orchestrator.calls["launch"] == 1, "60 s backoff: not relaunched yet"
    assert read(fleet, bot_id).next_attempt_at is not None
    fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason) == ("completed", "cancelled")
    reconciler.run_once()
    assert orchestrator.calls["launch"] == 1


def test_another_fleets_workloads_are_never_touched(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    spec = fleet.launcher.launch_spec(_ghost_bot(), "token")
    foreign = orchestrator.launch(replace(spec, fleet="someone-else"))
    reconciler.run_once()
    assert orchestrator.running() == [foreign]


def _transitions(fleet: FleetParts, bot_id: str) -> list[BotTransition]:
    with fleet.sessions() as session:
        return bot_records.list_transitions(session, bot_id)[0]


def test_secrets_sealed_with_a_dropped_key_fail_the_launch_clearly(
    fleet: FleetParts, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet, secrets={"api_key": "x"})
    fleet.launcher.box = SecretBox([Fernet.generate_key().decode()])  # the old key is gone
    fleet.launcher.launch(bot_id)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason) == ("failed", "secrets_unreadable")
    assert orchestrator.calls["launch"] == 0


def orphans_stopped() -> float:
    value = REGISTRY.get_sample_value(
        "botfleet_reconciler_repairs_total", {"reason": "orphan_stopped"}
    )
    return value or 0.0


def backdate_attempt(fleet: FleetParts, bot_id: str, attempt: int, seconds: float) -> None:
    with transaction(fleet.sessions) as session:
        row = session.get(BotAttempt, (bot_id, attempt))
        assert row is not None and row.ended_at is not None
        row.ended_at -= timedelta(seconds=seconds)


def test_a_workload_exiting_after_its_clean_stop_is_no_orphan(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    """The runtime reports `exited 0`, then its process takes a moment to go: the race of
    issue 12 (item 3), where the orphan pass used to SIGTERM it and count a repair. The bot
    stays `stopping` until its workload is gone (issue 27), and ends as its report says."""
    bot_id, ref = launched_bot(fleet)
    fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    assert post_callback(fleet, bot_id, "exited", exit_code=0)  # the process still runs
    before = orphans_stopped()
    reconciler.run_once()
    assert orchestrator.calls["stop"] == 0 and orchestrator.running() == [ref]
    assert orphans_stopped() == before
    assert read(fleet, bot_id).status == "stopping", "not ended while its workload runs"
    orchestrator.exit(ref, 0)  # it exits on its own
    reconciler.run_once()
    assert ref not in orchestrator.workloads, "removed once gone"
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("completed", "left", 0)
    assert orphans_stopped() == before


def backdate_report(fleet: FleetParts, bot_id: str, attempt: int, seconds: float) -> None:
    with transaction(fleet.sessions) as session:
        row = session.get(BotAttempt, (bot_id, attempt))
        assert row is not None and row.reported_at is not None
        row.reported_at -= timedelta(seconds=seconds)


@pytest.mark.parametrize("status", ["active", "stopping"])
def test_a_workload_outliving_its_exit_report_is_stopped_and_the_reported_code_stays(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator, status: str
) -> None:
    """The backstop of the exit watch (a manager restarted, another replica got the report):
    a bot whose runtime reported `exited` while a process it left runs on is stopped after the
    exit grace, and ends as its report said, never `workload_vanished` or with the kill's 137."""
    bot_id, ref = launched_bot(fleet)
    if status == "stopping":
        fleet.bots.stop_bot(bot_id=bot_id, user_id=None)
    assert post_callback(fleet, bot_id, "exited", exit_code=0)
    reconciler.run_once()
    assert (read(fleet, bot_id).status, orchestrator.running()) == (status, [ref])
    backdate_report(fleet, bot_id, 1, reconciler.exit_grace_s + 1)
    before = orphans_stopped()
    reconciler.run_once()
    assert orchestrator.workloads[ref].status.is_gone, "stopped: a process it left ran on"
    reconciler.run_once()
    assert ref not in orchestrator.workloads, "removed once ended"
    assert orphans_stopped() == before, "the bot's own workload, not an orphan"
    bot = read(fleet, bot_id)
    reason = "left" if status == "stopping" else "finished"
    assert (bot.status, bot.status_reason, bot.exit_code) == ("completed", reason, 0)
    assert bot.exit_code == 0, "the runtime's own report, not the engine's 137 from the stop"
    with fleet.sessions() as session:
        attempt = session.get(BotAttempt, (bot_id, 1))
    assert attempt is not None and attempt.exit_code == 0
    assert last_transition(fleet, bot_id).source == "runtime"


def test_the_reconciler_ends_a_reported_exit_with_the_report_once_its_workload_is_gone(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    """No exit watch ran (the report reached a replica that then died): the reconciler alone
    ends the bot when the workload goes, with the runtime's outcome (`crashed`, exit 3), not
    `workload_vanished` and not the engine's code; its silence meanwhile is no
    `heartbeat_lost`."""
    bot_id, ref = launched_bot(fleet)
    assert post_callback(fleet, bot_id, "exited", exit_code=3, reason="crashed")
    backdate(fleet, bot_id, 3600, "last_heartbeat_at")
    reconciler.reconciler.ctx.listening.since = utcnow() - timedelta(hours=2)
    reconciler.run_once()
    bot = read(fleet, bot_id)
    assert (bot.status, orchestrator.calls["stop"]) == ("active", 0), "its exit is awaited"
    orchestrator.exit(ref, 137)
    reconciler.run_once()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "crashed", 3)
    assert [(t.from_status, t.to_status, t.source) for t in _transitions(fleet, bot_id)][-1] == (
        "active",
        "failed",
        "runtime",
    )


def test_a_crashed_attempt_is_relaunched_only_once_its_workload_is_gone(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id = new_bot(fleet, restart={"max_retries": 1, "backoff_s": 0})
    fleet.launcher.launch(bot_id)
    first = read(fleet, bot_id).runtime_ref or ""
    callback(fleet, bot_id, "started")
    awaited = post_callback(fleet, bot_id, "exited", exit_code=1, reason="crashed")
    assert awaited is not None  # its process still runs
    reconciler.run_once()
    assert (read(fleet, bot_id).attempt, orchestrator.running()) == (1, [first])
    orchestrator.exit(first, 1)
    finish_exit(fleet, awaited)
    bot = read(fleet, bot_id)
    assert (bot.status, bot.attempt, bot.exit_code) == ("starting", 2, 1)


def test_an_older_attempt_gets_the_exit_grace_then_is_an_orphan(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    """An attempt ended while its workload ran on (a start timeout the engine could not carry
    out): the old workload is left its exit grace, then stopped; the next attempt is launched
    only once it is gone (`rules.may_relaunch`: never two copies of a bot)."""
    restart = {"max_retries": 1, "backoff_s": 0, "on": ["start_failed"]}
    bot_id = new_bot(fleet, restart=restart)
    fleet.launcher.launch(bot_id)
    first = read(fleet, bot_id).runtime_ref or ""
    backdate(fleet, bot_id, 31, "started_at")
    orchestrator.ignores_stop = True
    reconciler.reconcile_starting()  # start_timeout: attempt 1 ends, its workload runs on
    orchestrator.ignores_stop = False
    reconciler.run_once()  # attempt 2 is due, but attempt 1 may still run
    assert read(fleet, bot_id).runtime_ref is None
    assert orchestrator.running() == [first], "attempt 1 not stopped yet, and alone"
    backdate_attempt(fleet, bot_id, 1, reconciler.exit_grace_s + 1)
    before = orphans_stopped()
    reconciler.reconcile_workloads()
    assert orchestrator.running() == [], "attempt 1 outlived its grace: an orphan"
    assert orphans_stopped() == before + 1
    reconciler.run_once()  # attempt 1 is gone: attempt 2 is launched
    second = read(fleet, bot_id).runtime_ref
    assert second and second != first and orchestrator.running() == [second]


def test_a_workload_of_a_missing_bot_is_stopped_at_once(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    orphan = orchestrator.launch(fleet.launcher.launch_spec(_ghost_bot(), "token"))
    before = orphans_stopped()
    reconciler.reconcile_workloads()
    assert orchestrator.workloads[orphan].status.is_gone
    assert orphans_stopped() == before + 1


def on_its_second_attempt(fleet: FleetParts, reconciler: StrictReconciler) -> str:
    """A bot whose first attempt crashed, relaunched at once by its restart policy."""
    bot_id = new_bot(fleet, restart={"max_retries": 1, "backoff_s": 0})
    fleet.launcher.launch(bot_id)
    callback(fleet, bot_id, "started")
    callback(fleet, bot_id, "exited", exit_code=1, reason="crashed")
    reconciler.reconcile_starting()
    return bot_id


def test_start_timeout_records_the_exit_code_of_the_kill(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    """The code the engine reports for the stopped workload, at once; never an earlier
    attempt's code, never one made up."""
    bot_id = on_its_second_attempt(fleet, reconciler)  # which never calls back
    assert read(fleet, bot_id).attempt == 2
    backdate(fleet, bot_id, 31, "started_at")
    reconciler.reconcile_starting()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "start_timeout", 137)


def test_start_timeout_with_an_engine_that_cannot_tell_records_no_exit_code(
    fleet: FleetParts, reconciler: StrictReconciler, orchestrator: FakeOrchestrator
) -> None:
    bot_id = on_its_second_attempt(fleet, reconciler)
    backdate(fleet, bot_id, 31, "started_at")
    orchestrator.unavailable = True
    reconciler.reconcile_starting()
    bot = read(fleet, bot_id)
    assert (bot.status, bot.status_reason, bot.exit_code) == ("failed", "start_timeout", None)


def test_one_bots_error_is_reported_and_the_others_are_still_reconciled(
    fleet: FleetParts, orchestrator: FakeOrchestrator
) -> None:
    broken, broken_ref = launched_bot(fleet)
    other, other_ref = launched_bot(fleet)
    orchestrator.exit(broken_ref, 1)
    orchestrator.exit(other_ref, 1)
    orchestrator.buggy_refs.add(broken_ref)
    errors = fleet.reconciler().run_once()
    assert errors == [f"{broken}: a bug in a backend"]
    assert read(fleet, broken).status == "active"
    assert read(fleet, other).status_reason == "workload_vanished"


def test_a_bot_deleted_underneath_the_reconciler_is_no_error(fleet: FleetParts) -> None:
    """The reconciler listed the bot, then a DELETE (or retention) removed it before its visit:
    the visit has nothing to do, and no error is reported for it."""
    bot_id, _ = launched_bot(fleet)
    with transaction(fleet.sessions) as session:
        session.delete(bot_records.lock_bot(session, bot_id))
    assert fleet.reconciler().ctx.reread(bot_id, BotStatus.ACTIVE) is None
