"""The lifecycle's decisions (`manager/lifecycle/rules.py`) as tables: what happens to a bot
in each status when something happens to it. Pure functions: no database, no engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import TERMINAL, TRANSITIONS, BotStatus, IllegalTransition
from botfleet.manager.lifecycle.rules import (
    ACCEPTS_COMMANDS,
    MAX_BACKOFF_S,
    ExitReport,
    Move,
    Outcome,
    Overdue,
    Restart,
    StopPlan,
    check_accepts_command,
    next_attempt,
    on_exit,
    on_launch_failed,
    on_overdue,
    on_report,
    on_stop_requested,
    on_stop_without_workload,
    on_workload_gone,
)

S = BotStatus
COMPLETED, FAILED = S.COMPLETED, S.FAILED


def bot(status: BotStatus, **fields: Any) -> Bot:
    """A bot row in memory, never stored."""
    values: dict[str, Any] = {
        "id": "b1",
        "attempt": 1,
        "runtime_ref": "ref-1",
        "next_attempt_at": None,
        "restart_max_retries": 0,
        "restart_backoff_s": 5.0,
    }
    return Bot(status=status, **(values | fields))


# The runtime reports `started` or `leaving`: (status, event, reason given) → the move (None:
# a repeat, nothing to do). Whether the move is legal is the table's to say.
REPORT_CASES = [
    (S.STARTING, "started", None, Move(S.ACTIVE, "started")),
    (S.STARTING, "started", "warmed_up", Move(S.ACTIVE, "warmed_up")),
    (S.ACTIVE, "started", None, None),  # a retried `started`
    (S.ACTIVE, "leaving", None, Move(S.STOPPING, "bot_leaving")),
    (S.STOPPING, "leaving", "leave_requested", None),  # leaving because it was told to
]


@pytest.mark.parametrize(("status", "event", "reported", "move"), REPORT_CASES)
def test_on_report(status: BotStatus, event: str, reported: str | None, move: Move | None) -> None:
    assert on_report(bot(status), event, reported) == move


# The runtime reports `exited`: (status, exit code, reason it gave) → (status, reason).
EXIT_CASES = [
    (S.STARTING, 0, None, FAILED, "exited_before_started"),
    (S.STARTING, 3, "start_failed", FAILED, "start_failed"),
    (S.ACTIVE, 0, None, COMPLETED, "finished"),
    (S.ACTIVE, 0, "crashed", COMPLETED, "finished"),  # a zero exit is never a crash
    (S.ACTIVE, 0, "done_early", COMPLETED, "done_early"),
    (S.ACTIVE, 2, None, FAILED, "crashed"),
    (S.ACTIVE, 2, "out_of_memory", FAILED, "out_of_memory"),
    (S.STOPPING, 0, None, COMPLETED, "left"),
    (S.STOPPING, 1, None, FAILED, "crashed"),
]


@pytest.mark.parametrize(("status", "code", "reported", "target", "reason"), EXIT_CASES)
def test_on_exit(
    status: BotStatus, code: int, reported: str | None, target: BotStatus, reason: str
) -> None:
    assert on_exit(bot(status), code, reported, "detail") == Outcome(target, reason, code, "detail")


@pytest.mark.parametrize("status", [S.REQUESTED, S.COMPLETED, S.FAILED])
def test_an_exit_of_a_bot_that_never_ran_or_has_ended_is_refused(status: BotStatus) -> None:
    with pytest.raises(IllegalTransition):
        on_exit(bot(status), 0, None)


# The engine confirms the workload is gone: (status, engine's exit code) → (status, reason).
GONE_CASES = [
    (S.STARTING, 0, FAILED, "exited_before_started"),
    (S.STARTING, None, FAILED, "exited_before_started"),
    (S.ACTIVE, 0, COMPLETED, "exited"),
    (S.ACTIVE, 137, FAILED, "workload_vanished"),
    (S.ACTIVE, None, FAILED, "workload_vanished"),  # vanished without a trace
    (S.STOPPING, 0, COMPLETED, "exited"),
    (S.STOPPING, None, COMPLETED, "exited"),  # it was asked to go, and it went
    (S.STOPPING, 1, FAILED, "exited"),
]


@pytest.mark.parametrize(("status", "code", "target", "reason"), GONE_CASES)
def test_on_workload_gone(
    status: BotStatus, code: int | None, target: BotStatus, reason: str
) -> None:
    outcome = on_workload_gone(bot(status), code, "engine detail")
    assert (outcome.target, outcome.reason, outcome.exit_code) == (target, reason, code)


# The runtime reported `exited` (its code, its reason), then its workload went (killed: 137,
# out of memory): the report is the outcome, as the callback alone used to decide it.
REPORTED_GONE_CASES = [
    (S.ACTIVE, ExitReport(0), COMPLETED, "finished", 0),
    (S.ACTIVE, ExitReport(3, "crashed", "boom"), FAILED, "crashed", 3),
    (S.STOPPING, ExitReport(0, "left"), COMPLETED, "left", 0),
    (S.STOPPING, ExitReport(1), FAILED, "crashed", 1),
    (S.STARTING, ExitReport(0), FAILED, "exited_before_started", 0),
]


@pytest.mark.parametrize(("status", "report", "target", "reason", "code"), REPORTED_GONE_CASES)
def test_on_workload_gone_after_a_report(
    status: BotStatus, report: ExitReport, target: BotStatus, reason: str, code: int
) -> None:
    outcome = on_workload_gone(bot(status), 137, "killed", "out_of_memory", report=report)
    assert (outcome.target, outcome.reason, outcome.exit_code) == (target, reason, code)
    assert outcome.detail == report.detail


# The reconciler stopped an overdue workload: (what was late, the engine confirms it gone,
# its code, its detail) → the outcome (None: not yet).
OVERDUE_CASES = [
    (
        Overdue.START,
        True,
        137,
        "killed",
        Outcome(FAILED, "start_timeout", 137, "not started within 30s; killed"),
    ),
    (
        Overdue.START,
        False,
        None,
        "",
        Outcome(FAILED, "start_timeout", None, "not started within 30s"),
    ),
    (
        Overdue.HEARTBEAT,
        True,
        None,
        "",
        Outcome(FAILED, "heartbeat_lost", None, "no heartbeat for 30s"),
    ),
    (Overdue.HEARTBEAT, False, 137, "", None),  # recorded stopping; it ends once gone
    (
        Overdue.LEAVE,
        True,
        137,
        "",
        Outcome(COMPLETED, "killed_after_grace", 137, "did not leave within 30s"),
    ),
    (Overdue.LEAVE, False, None, "", None),  # completed only once confirmed gone
]


@pytest.mark.parametrize(("overdue", "gone", "code", "detail", "expected"), OVERDUE_CASES)
def test_on_overdue(
    overdue: Overdue, gone: bool, code: int | None, detail: str, expected: Outcome | None
) -> None:
    assert on_overdue(overdue, 30, gone=gone, exit_code=code, detail=detail) == expected


def test_a_stop_with_nothing_launched_is_a_cancel() -> None:
    assert on_stop_without_workload() == Outcome(
        COMPLETED, "cancelled", None, "no workload was launched"
    )


# The engine refused a launch: status → outcome (None: nothing to do).
LAUNCH_FAILED_CASES = [
    (S.STARTING, Outcome(FAILED, "image_not_found", None, "no such image")),
    (S.STOPPING, Outcome(COMPLETED, "cancelled", None, "no such image")),  # a stop came first
    (S.COMPLETED, None),
    (S.FAILED, None),
]


@pytest.mark.parametrize(("status", "expected"), LAUNCH_FAILED_CASES)
def test_on_launch_failed(status: BotStatus, expected: Outcome | None) -> None:
    assert on_launch_failed(bot(status), "image_not_found", "no such image") == expected


WAITING_TO_RESTART = {"runtime_ref": None, "next_attempt_at": datetime(2026, 1, 1, tzinfo=UTC)}
# A stop is requested: (status, bot fields) → the plan.
STOP_CASES = [
    (S.QUEUED, {}, StopPlan(((COMPLETED, "cancelled"),), tell_workload=False)),
    (S.REQUESTED, {}, StopPlan(((COMPLETED, "cancelled"),), tell_workload=False)),
    (S.STARTING, {}, StopPlan(((S.STOPPING, "stop_requested"),), tell_workload=True)),
    (S.ACTIVE, {}, StopPlan(((S.STOPPING, "stop_requested"),), tell_workload=True)),
    (
        S.STARTING,
        WAITING_TO_RESTART,
        StopPlan(
            ((S.STOPPING, "stop_requested"), (COMPLETED, "cancelled")),
            tell_workload=False,
            cancel_restart=True,
        ),
    ),
    (S.STOPPING, {}, StopPlan((), tell_workload=False)),  # a stop is idempotent
    (S.COMPLETED, {}, StopPlan((), tell_workload=False)),
]


@pytest.mark.parametrize(("status", "fields", "plan"), STOP_CASES)
def test_on_stop_requested(status: BotStatus, fields: dict[str, Any], plan: StopPlan) -> None:
    assert on_stop_requested(bot(status, **fields), "stop_requested") == plan


def test_every_planned_stop_move_is_legal() -> None:
    for status, _fields, plan in STOP_CASES:
        current = status
        for target, _ in plan.moves:
            assert (current, target) in TRANSITIONS
            current = target


CRASH = Outcome(FAILED, "crashed", 1)
# The restart policy: (status, attempt, max_retries, backoff_s, outcome) → restart or None.
RESTART_CASES = [
    (S.ACTIVE, 1, 0, 5.0, CRASH, None),  # no policy
    (S.ACTIVE, 1, 2, 5.0, CRASH, Restart(attempt=2, delay_s=5.0)),
    (S.ACTIVE, 2, 2, 5.0, CRASH, Restart(attempt=3, delay_s=10.0)),  # backoff doubles
    (S.ACTIVE, 3, 2, 5.0, CRASH, None),  # retries used up
    (S.ACTIVE, 11, 20, 5.0, CRASH, Restart(attempt=12, delay_s=MAX_BACKOFF_S)),  # capped
    (S.ACTIVE, 1, 2, 5.0, Outcome(COMPLETED, "finished", 0), None),  # success ends it
    (S.STARTING, 1, 2, 5.0, CRASH, None),  # never started: not restarted
    (S.STOPPING, 1, 2, 5.0, CRASH, None),  # asked to stop: not restarted
]


@pytest.mark.parametrize(
    ("status", "attempt", "retries", "backoff_s", "outcome", "restart"), RESTART_CASES
)
def test_next_attempt(
    status: BotStatus,
    attempt: int,
    retries: int,
    backoff_s: float,
    outcome: Outcome,
    restart: Restart | None,
) -> None:
    subject = bot(status, attempt=attempt, restart_max_retries=retries, restart_backoff_s=backoff_s)
    assert next_attempt(subject, outcome) == restart


def test_every_outcome_is_a_legal_move() -> None:
    for status, _, _, target, _ in EXIT_CASES:
        assert (status, target) in TRANSITIONS
    for status, _, target, _ in GONE_CASES:
        assert (status, target) in TRANSITIONS
    assert not [pair for pair in TRANSITIONS if pair[0] in TERMINAL]


def test_a_status_column_holds_a_botstatus_even_when_given_a_string() -> None:
    assert Bot(status="active").status is S.ACTIVE
    with pytest.raises(ValueError):
        Bot(status="sleeping")


#: Whether a bot in each status takes a reconfigure, a custom command or new secrets.
ACCEPTS = {
    S.QUEUED: False,  # waiting for a slot: a stop cancels it
    S.REQUESTED: False,  # not launched yet: a stop cancels it instead
    S.STARTING: True,
    S.ACTIVE: True,
    S.STOPPING: False,
    S.COMPLETED: False,
    S.FAILED: False,
}


@pytest.mark.parametrize("status", list(BotStatus))
def test_which_statuses_accept_a_command(status: BotStatus) -> None:
    assert (status in ACCEPTS_COMMANDS) is ACCEPTS[status]
    if ACCEPTS[status]:
        check_accepts_command("b1", status, "reconfigure")
    else:
        with pytest.raises(IllegalTransition) as refused:
            check_accepts_command("b1", status, "reconfigure")
        assert refused.value.target == "reconfigure"


def test_a_stop_tells_the_workload_only_when_the_bot_accepts_commands() -> None:
    for status in BotStatus:
        plan = on_stop_requested(bot(status), "stop_requested")
        assert plan.tell_workload is (status in ACCEPTS_COMMANDS)
