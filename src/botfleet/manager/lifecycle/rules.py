"""Which status follows an event: the lifecycle's decisions, as small pure functions.

Each function looks at a bot (read only) and what happened, and returns the move to make (an
`Outcome`, a `Restart`, a `StopPlan`) or None for "nothing to do". None of them touches the
database: the services load the bot under its row lock, call one of these, and store the answer
with `store.transition`. `tests/unit/test_lifecycle_rules.py` lists the cases as a table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from botfleet.manager.lifecycle.states import (
    PERMANENT_FAILURE_REASONS,
    RESTART_ON_DEFAULT,
    BotStatus,
    IllegalTransition,
)

if TYPE_CHECKING:
    from botfleet.manager.core.models import Bot

S = BotStatus
MAX_BACKOFF_S = 3600.0
#: A runtime may not call a clean exit a crash: these reasons are replaced on a zero exit.
_FAILURE_REASONS = frozenset({"crashed", "start_failed"})
HEARTBEAT_LOST = "heartbeat_lost"
#: The engine ended a workload nobody in botfleet asked to stop, because of its node: the node
#: was lost (partitioned or its engine dead, the task shut down once it came back; or removed
#: by the operator) or drained (orchestrators/swarm). These outweigh what the bot reported (it
#: left on the engine's SIGTERM) and count as a `crash` for the restart policy.
NODE_LOST = "node_lost"
EVICTED = "evicted"
DISPLACED = frozenset({NODE_LOST, EVICTED})


class Move(NamedTuple):
    """One status change and its reason."""

    target: BotStatus
    reason: str


@dataclass(frozen=True)
class Outcome:
    """How an attempt (or a launch) ends: the terminal status, why, and what the engine knew."""

    target: BotStatus
    reason: str
    exit_code: int | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.target == S.FAILED


@dataclass(frozen=True)
class Restart:
    """The restart policy's answer to a failed attempt: the next attempt, after `delay_s`."""

    attempt: int
    delay_s: float


@dataclass(frozen=True)
class StopPlan:
    """What a stop request does: the statuses to pass through (with one reason each), and
    whether a running workload must still be told to leave."""

    moves: tuple[Move, ...]
    tell_workload: bool
    cancel_restart: bool = False


#: The statuses in which a bot accepts a command (a reconfigure, a custom command, new secrets,
#: the `leave` of a stop): it runs, or is about to. Before its launch (`requested`) a stop
#: cancels it instead; once it is leaving or has ended, nothing reaches it any more.
ACCEPTS_COMMANDS: frozenset[BotStatus] = frozenset({S.STARTING, S.ACTIVE})


def check_accepts_command(bot_id: str, status: BotStatus, action: str) -> None:
    """Refuse `action` for a bot in `status` that accepts no command (IllegalTransition, whose
    message says why: not launched yet, leaving, or ended)."""
    if status not in ACCEPTS_COMMANDS:
        raise IllegalTransition(bot_id, status, action)


#: What the runtime's `started` and `leaving` reports move a bot to, with the default reason.
_REPORTED_MOVES = {"started": Move(S.ACTIVE, "started"), "leaving": Move(S.STOPPING, "bot_leaving")}


def on_report(bot: Bot, event: str, reported_reason: str | None) -> Move | None:
    """The runtime reported `started` or `leaving`. A repeat of what the bot already reflects
    (a retried `started`, `leaving` while stopping) is None, so retries are harmless; whether
    the move is legal is the table's to say when it is stored."""
    target, default_reason = _REPORTED_MOVES[event]
    if bot.status == target:
        return None
    return Move(target, reported_reason or default_reason)


def on_exit(bot: Bot, exit_code: int, reported_reason: str | None, detail: str = "") -> Outcome:
    """The runtime reported its exit. Before `started` it is always a failure; afterwards
    exit 0 is `finished` (or `left`, when it was asked to stop), anything else `crashed`."""
    status = bot.status
    if status == S.STARTING:
        target, default_reason = S.FAILED, "exited_before_started"
    elif exit_code == 0:
        target, default_reason = S.COMPLETED, ("left" if status == S.STOPPING else "finished")
    else:
        target, default_reason = S.FAILED, "crashed"
    reason = reported_reason or default_reason
    if target == S.COMPLETED and reason in _FAILURE_REASONS:
        reason = default_reason
    if status not in (S.STARTING, S.ACTIVE, S.STOPPING):
        raise IllegalTransition(bot.id, status, target)
    return kept_silent(bot, Outcome(target, reason, exit_code, detail))


@dataclass(frozen=True)
class ExitReport:
    """What the runtime's `exited` said, kept on the attempt until its workload is gone: the
    bot ends only once none of its processes remain, with the outcome the report gives."""

    exit_code: int
    reason: str | None = None
    detail: str = ""


def on_workload_gone(
    bot: Bot,
    exit_code: int | None,
    detail: str = "",
    engine_reason: str | None = None,
    report: ExitReport | None = None,
) -> Outcome:
    """The engine confirms the workload is gone. The runtime's `report`, when it sent one, is
    the outcome (`on_exit`: the code its bot ended with, not how its leftovers were killed);
    else a failure the engine diagnosed itself (`engine_reason`: `out_of_memory`) is the
    reason. A node lost or drained (`DISPLACED`) is the reason even when the runtime reported
    its exit (the engine's SIGTERM made it leave), unless the manager had stopped it for
    silence first."""
    if engine_reason in DISPLACED and not stopped_for_silence(bot):
        return Outcome(S.FAILED, engine_reason, exit_code, detail)
    if report is not None:
        return on_exit(bot, report.exit_code, report.reason, report.detail)
    if stopped_for_silence(bot):
        return Outcome(S.FAILED, HEARTBEAT_LOST, exit_code, detail)
    if engine_reason is not None:
        return Outcome(S.FAILED, engine_reason, exit_code, detail)
    if bot.status == S.STARTING:
        return Outcome(S.FAILED, "exited_before_started", exit_code, detail)
    if bot.status == S.STOPPING:  # it was asked to leave: only a non-zero code is a failure
        target = S.COMPLETED if exit_code in (0, None) else S.FAILED
        return Outcome(target, "exited", exit_code, detail)
    if exit_code == 0:
        return Outcome(S.COMPLETED, "exited", 0)
    return Outcome(S.FAILED, "workload_vanished", exit_code, detail)


class Overdue(enum.Enum):
    """What the reconciler found late and killed the workload for: (status, reason, why)."""

    START = (S.FAILED, "start_timeout", "not started within {:g}s")
    HEARTBEAT = (S.FAILED, HEARTBEAT_LOST, "no heartbeat for {:g}s")
    LEAVE = (S.COMPLETED, "killed_after_grace", "did not leave within {:g}s")


def on_overdue(
    overdue: Overdue, limit_s: float, *, gone: bool, exit_code: int | None = None, detail: str = ""
) -> Outcome | None:
    """No `started` within the start timeout, no heartbeat for too long, or no exit within the
    stop grace: the reconciler stopped the workload (`gone`: the engine confirms it ended, with
    `exit_code`). A silent or late starter fails either way. A silent bot (recorded `stopping`
    before it was signalled: `STOP_FOR_SILENCE`) and one that outlived the stop grace end only
    once their workload is confirmed gone (None: not yet; the bot stays `stopping`)."""
    if overdue != Overdue.START and not gone:
        return None
    target, reason, why = overdue.value
    return Outcome(
        target, reason, exit_code if gone else None, _joined(why.format(limit_s), detail)
    )


#: The reconciler's decision about a silent bot, stored (`active → stopping`) before its workload
#: is signalled: if it cannot be stored, nothing is signalled.
STOP_FOR_SILENCE = Move(S.STOPPING, HEARTBEAT_LOST)


def stopped_for_silence(bot: Bot) -> bool:
    """The reconciler stopped this bot for silence and its workload has not ended yet."""
    return bot.status == S.STOPPING and bot.status_reason == HEARTBEAT_LOST


def kept_silent(bot: Bot, outcome: Outcome) -> Outcome:
    """However the workload of a bot stopped for silence then ends (it exits on SIGTERM, it is
    killed, it vanishes), the bot ends `heartbeat_lost`: what ended it, not how it went."""
    if not stopped_for_silence(bot) or outcome.reason == HEARTBEAT_LOST:
        return outcome
    return Outcome(S.FAILED, HEARTBEAT_LOST, outcome.exit_code, outcome.detail)


def heartbeat_lost(
    last_heartbeat_at: datetime | None,
    *,
    listening_since: datetime | None,
    now: datetime | None,
    budget_s: float,
    unstored_age_s: float | None = None,
) -> bool:
    """Whether a running bot has been silent for longer than `budget_s`, counting only the
    silence the manager could have heard: from the later of its last heartbeat and the moment
    the manager became able to record heartbeats again (`listening_since`: this replica became
    leader, the database came back, or its heartbeat writes work again). A bot is never failed
    for an outage of the manager's own. All three times come from one clock (the database's);
    not knowing when listening began, or what time it is, judges nothing. A heartbeat heard
    `unstored_age_s` ago and not stored yet (it waits in this replica's buffer) was heard all
    the same: silence is what the manager heard, not what it managed to write."""
    if listening_since is None or now is None:
        return False
    if unstored_age_s is not None and unstored_age_s <= budget_s:
        return False
    heard = listening_since
    if last_heartbeat_at is not None and last_heartbeat_at > heard:
        heard = last_heartbeat_at
    return (now - heard).total_seconds() > budget_s


def on_stop_without_workload() -> Outcome:
    """Stopping with nothing ever launched, once the stop grace passed: a cancel."""
    return Outcome(S.COMPLETED, "cancelled", detail="no workload was launched")


def on_launch_failed(bot: Bot, code: str, message: str) -> Outcome | None:
    """The engine refused the launch: a failure, or the end of a stop that came first."""
    if bot.status == S.STARTING:
        return Outcome(S.FAILED, code, detail=message)
    if bot.status == S.STOPPING:
        return Outcome(S.COMPLETED, "cancelled", detail=message)
    return None


def on_stop_requested(bot: Bot, reason: str) -> StopPlan:
    """A stop (API, scheduler): cancel before launch (queued or requested), otherwise ask the
    bot to leave; a bot waiting out a restart backoff has nothing running, so it ends at once.
    Idempotent."""
    if bot.status in (S.QUEUED, S.REQUESTED):  # nothing launched yet: a cancel
        return StopPlan((Move(S.COMPLETED, "cancelled"),), tell_workload=False)
    if bot.status not in ACCEPTS_COMMANDS:
        return StopPlan((), tell_workload=False)  # stopping or ended already: no leave
    if bot.runtime_ref is None and bot.next_attempt_at is not None:
        moves = (Move(S.STOPPING, reason), Move(S.COMPLETED, "cancelled"))
        return StopPlan(moves, tell_workload=False, cancel_restart=True)
    return StopPlan((Move(S.STOPPING, reason),), tell_workload=True)


def restart_trigger(bot: Bot, outcome: Outcome) -> str | None:
    """Which `restart.on` trigger a failure is: `start_failed` before `started` (launch error,
    start timeout, exit before started), `heartbeat_lost`, or `crash` for any other failure of
    an active bot, and for a node lost or drained under a bot that was leaving on the engine's
    own signal (`DISPLACED`: botfleet never asked it to stop); None for what no policy retries
    (a success, a stop gone wrong, a failure the bot declared permanent:
    `PERMANENT_FAILURE_REASONS`)."""
    if not outcome.failed or outcome.reason in PERMANENT_FAILURE_REASONS:
        return None
    if bot.status == S.STARTING:
        return "start_failed"
    if bot.status == S.ACTIVE or outcome.reason in DISPLACED:
        return "heartbeat_lost" if outcome.reason == HEARTBEAT_LOST else "crash"
    return None


def next_attempt(bot: Bot, outcome: Outcome) -> Restart | None:
    """The restart policy: a failure whose trigger the policy lists (`restart.on`, default
    crash and heartbeat_lost), with retries left, is relaunched after
    `backoff_s * 2^(restarts used)` seconds (at most an hour); anything else ends the bot."""
    # Restarts a health rule made (services/health_rules.py) are not the policy's to count.
    restarts_used = max(bot.attempt - 1 - int((bot.health_state or {}).get("restarts", 0)), 0)
    trigger = restart_trigger(bot, outcome)
    listed = RESTART_ON_DEFAULT if bot.restart_on is None else bot.restart_on
    if trigger is None or trigger not in listed:
        return None
    if restarts_used >= bot.restart_max_retries:
        return None
    delay = min(bot.restart_backoff_s * 2**restarts_used, MAX_BACKOFF_S)
    return Restart(attempt=bot.attempt + 1, delay_s=delay)


def may_relaunch(earlier_attempts_gone: Iterable[bool]) -> bool:
    """A restart launches its next attempt only once the engine confirms that every earlier
    attempt's workload is gone: one on a node that is down (partitioned, its engine dead) may
    still run, and relaunching then would run the bot twice. Until then the bot waits in
    `starting`; the reconciler asks again on each pass."""
    return all(earlier_attempts_gone)


def _joined(reason: str, engine_detail: str) -> str:
    return f"{reason}; {engine_detail}" if engine_detail else reason
