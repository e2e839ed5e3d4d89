"""What every per-state function of the reconciler shares: the database, the launcher and the
stop requests (`BotRequests`), the engine's word on a
workload (only when it positively knows: from the tick's one listing, else by asking), what
this replica heard (its heartbeat buffer), the runtimes' `exited` reports still waiting for
their workload to go (`exits`), and storing an attempt's end if nothing moved first."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import NotFound
from botfleet.manager.core.listener_health import CALLBACK_LISTENER, ListenerHealth
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.lifecycle.rules import (
    DISPLACED,
    HEARTBEAT_LOST,
    STOP_FOR_SILENCE,
    Outcome,
    Overdue,
    heartbeat_lost,
    kept_silent,
    next_attempt,
    on_overdue,
    on_workload_gone,
)
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.attempts import PendingExit, end_attempt, exit_report
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.launcher import Launcher
from botfleet.manager.services.transitions import transition
from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    Orchestrator,
    OrchestratorError,
    Workload,
    WorkloadState,
    WorkloadStatus,
)

log = logging.getLogger("botfleet.manager.background.reconciler")

#: What a per-state function found to do about a bot; None when nothing.
Repair = Callable[[], object]


def older_than(moment: datetime | None, seconds: float) -> bool:
    return moment is not None and moment < utcnow() - timedelta(seconds=seconds)


def exit_grace_s(settings: Settings) -> float:
    """How long the workload of an attempt that reported `exited` (or ended) may take to go on
    its own before it is stopped: as long as a stopped bot may live, the stop grace plus the
    time SIGTERM may take. A runtime reports `exited` before its process or container has gone
    (a container takes a second or more under load), and the engine may still be carrying out
    a stop the manager ordered."""
    return settings.stop_grace_s + settings.kill_after_s


@dataclass(frozen=True)
class Kill:
    """What the engine said after the reconciler stopped a workload: the exit code only when
    it confirms the workload is gone."""

    gone: bool = False
    exit_code: int | None = None
    detail: str = ""


class Listening:
    """Since when this replica's reconciler could have heard every heartbeat, and what time it
    is, both on the database's clock (manager/core/clock.py).

    Heartbeats sent while the manager was down, or while its database was unreachable, were
    never recorded: that silence is the manager's, not the bot's. So silence counts only from
    `since`, which restarts when this replica becomes leader, when the database comes back
    (`lost()`) and when this replica can hear again (`observe(hearing=False)` while its
    heartbeat writes fail, or its bots' listener turns connections away: a heartbeat may have
    reached another replica in the same state); `rules.heartbeat_lost` judges with it.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # the loop's thread writes; tests and ticks may read
        self.since: datetime | None = None
        self.now: datetime | None = None

    def observe(self, now: datetime, *, hearing: bool = True) -> None:
        """The database answered at `now` (its clock): listening (re)starts if it had stopped,
        unless heartbeats cannot be heard or stored (`hearing` False, `Context.hearing`): then
        it stops, as in `lost()`."""
        with self._mutex:
            self.now = now
            if not hearing:
                if self.since is not None:
                    log.warning("heartbeats cannot be heard or stored: no bot is judged silent "
                                "until they can, and a heartbeat budget after")  # fmt: skip
                self.since = None
            elif self.since is None:
                self.since = now
                log.info("reconciler listening for heartbeats from %s", now.isoformat())

    def lost(self) -> None:
        """This replica just became leader, or its database stopped answering: whatever
        silence follows is judged only once a full heartbeat budget has been heard again."""
        with self._mutex:
            self.since = None


class Listing:
    """The tick's one look at every workload of this fleet (a per-bot call to the engine costs
    as much as the listing itself: thousands of them made the tick slow).

    Taken after the live rows were read, so every `runtime_ref` in those rows was stored before
    it. A workload in the listing is judged by what the listing says; one missing from it is
    asked about on its own (`Context.confirmed_status`). `error` is set when the engine could
    not be listed: then nothing is known about any workload this tick.
    """

    def __init__(
        self, workloads: Iterable[Workload] = (), *, error: Exception | None = None
    ) -> None:
        self.workloads = list(workloads)
        self.error = error
        self._by_ref = {w.runtime_ref: w for w in self.workloads}

    @classmethod
    def of(cls, launcher: Launcher) -> Listing:
        """This fleet's workloads now; never raises (an engine that cannot answer is `error`)."""
        try:
            return cls(launcher.workloads())
        except Exception as exc:
            log.warning("cannot list the workloads: %s", exc)
            return cls(error=exc)

    def get(self, runtime_ref: str) -> Workload | None:
        return self._by_ref.get(runtime_ref)


@dataclass(frozen=True)
class Context:
    """The reconciler's view of the installation, handed to each per-state function; a pass
    hands them a copy carrying its `listing` (None: none taken, ask the engine per bot)."""

    sessions: sessionmaker[Session]
    settings: Settings
    launcher: Launcher  # launches, relaunches, the engine's listings
    bots: BotRequests  # a stop the reconciler decides (max_duration) goes the API's way
    heard: HeartbeatBuffer | None = None  # this replica's heartbeats not stored yet
    callback_listener: ListenerHealth = field(default_factory=lambda: CALLBACK_LISTENER)
    listening: Listening = field(default_factory=Listening)
    listing: Listing | None = None
    #: Live bots whose runtime reported `exited` (`attempts.pending_exits`), read with the pass's
    #: rows: each ends, with its report, once its workload is gone.
    exits: Mapping[str, PendingExit] = field(default_factory=dict)

    @property
    def orchestrator(self) -> Orchestrator:
        return self.launcher.orchestrator

    def hearing(self) -> bool:
        """Whether this replica can hear and keep heartbeats now: its heartbeat writes work
        (none failed since the last that landed, none waited longer than a heartbeat
        interval: a held lock) and the bots' listener has not turned a connection away for
        lack of room within a heartbeat interval (a heartbeat refused at the door)."""
        interval = self.settings.heartbeat_s
        if self.heard is not None and self.heard.writes_failing(interval):
            return False
        return not self.callback_listener.saturated_within(interval)

    def silent(self, bot: Bot) -> bool:
        """Whether `bot` is silent past its budget, by what this replica heard: the stored
        heartbeat, one waiting in its buffer, and only while it could listen
        (`rules.heartbeat_lost`, `Listening`)."""
        listening = self.listening
        unstored_s = None if self.heard is None else self.heard.unstored_age(bot.id)
        return heartbeat_lost(bot.last_heartbeat_at, listening_since=listening.since,
                              now=listening.now, budget_s=self.settings.heartbeat_lost_after_s,
                              unstored_age_s=unstored_s)  # fmt: skip

    def reread(self, bot_id: str, expected: BotStatus) -> Bot | None:
        """The bot as it is now; None (logged) when it left `expected` since it was listed, or
        was deleted meanwhile (`DELETE /bots/{id}`, retention)."""
        with self.sessions() as session:
            try:
                bot = bot_records.get_bot(session, bot_id, user_id=None)
            except NotFound:
                log.info("bot %s was deleted underneath the reconciler", bot_id)
                return None
        if bot.status != expected:
            log.info("bot %s changed underneath the reconciler: %s, no longer %s",
                     bot_id, bot.status, expected)  # fmt: skip
            return None
        return bot

    def end_if_still(
        self, bot_id: str, expected: BotStatus, outcome: Outcome, attempt: int | None = None
    ) -> None:
        """Store `outcome` as the end of the bot's attempt if the bot is still in `expected`
        (and, given `attempt`, still at that attempt) under its row lock: a callback may have
        moved it meanwhile, or ended the attempt and restarted it (`starting → starting` keeps
        the status): then nothing changes. An attempt whose runtime reported `exited` ends as
        its report says (`rules.on_workload_gone`), as the runtime's."""
        source, repair = Source.RECONCILER, outcome.reason
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            if bot.status != expected or (attempt is not None and bot.attempt != attempt):
                log.info("bot %s is now %s (attempt %s); no %s repair",
                         bot_id, bot.status, bot.attempt, outcome.reason)  # fmt: skip
                return
            report = exit_report(session, bot)
            if report is not None and outcome.reason not in DISPLACED:  # the node's fate wins
                outcome = on_workload_gone(bot, outcome.exit_code, outcome.detail, report=report)
                # a bot's own reason is no metric label: bots could make as many as they like
                source, repair = Source.RUNTIME, "reported_exit"
            end_attempt(session, bot, outcome, source=source)
        metrics.RECONCILER_REPAIRS.labels(repair).inc()
        log.warning("bot %s: %s → %s (%s) %s", bot_id, expected, outcome.target,
                    outcome.reason, outcome.detail)  # fmt: skip

    def confirmed_status(self, bot: Bot) -> WorkloadStatus | None:
        """The workload's status when the engine positively knows it, else None.

        The tick's listing answers for the workloads it shows. A "not found" from inspect is
        confirmed by a listing of the bot's workloads made now (the tick's may predate a
        relaunch) before anyone acts on it: the reconciler reaps only on positive proof of
        death. Nothing is known when this tick's listing failed: the engine cannot be asked.
        """
        if not bot.runtime_ref:
            return None
        if self.listing is not None:
            if self.listing.error is not None:
                return None
            listed = self.listing.get(bot.runtime_ref)
            if listed is not None:
                status = listed.status
                return status if status.state != WorkloadState.UNKNOWN else None
        try:
            status = self.orchestrator.inspect(bot.runtime_ref)
            if status.state == WorkloadState.NOT_FOUND:
                found = self.launcher.workloads(**{LABEL_BOT_ID: bot.id})
                if any(w.runtime_ref == bot.runtime_ref for w in found):
                    return None
        except OrchestratorError as exc:
            log.info("cannot inspect bot %s: %s", bot.id, exc)
            return None
        return status if status.state != WorkloadState.UNKNOWN else None

    def gone(self, bot: Bot) -> WorkloadStatus | None:
        """The workload's final status when the engine confirms it is gone, else None."""
        status = self.confirmed_status(bot)
        return status if status is not None and status.is_gone else None

    def reported(self, bot: Bot) -> PendingExit | None:
        """The runtime's `exited` on the bot's current attempt, when one waits (as the pass
        read it: `end_if_still` reads it again under the bot's lock)."""
        pending = self.exits.get(bot.id)
        return pending if pending is not None and pending.attempt == bot.attempt else None

    def after_report(self, bot: Bot, pending: PendingExit) -> Repair | None:
        """A bot whose runtime reported `exited`: it ends with its report once its workload is
        gone; one that outlives the exit grace (a child it left behind) is stopped first. Its
        silence, timeouts and `max_duration_s` no longer matter."""
        final = self.gone(bot)
        if final is not None:
            outcome = on_workload_gone(bot, final.exit_code, final.detail, final.reason)
            return partial(self.end_if_still, bot.id, bot.status, outcome, bot.attempt)
        if older_than(pending.reported_at, exit_grace_s(self.settings)):
            return partial(self.stop_after_report, bot)
        return None

    def stop_after_report(self, bot: Bot) -> None:
        """Stop what a bot left running after its `exited`, and end it (with its report) once
        the engine confirms the workload is gone."""
        log.warning("bot %s: its workload outlived its exit report by %gs; stopping it",
                    bot.id, exit_grace_s(self.settings))  # fmt: skip
        kill = self.force_stop(bot)
        if kill.gone:
            outcome = on_workload_gone(bot, kill.exit_code, kill.detail)
            self.end_if_still(bot.id, bot.status, outcome, bot.attempt)

    def kill_overdue(self, bot: Bot, overdue: Overdue, limit_s: float) -> None:
        """Stop a workload that is late (`rules.Overdue`) and end its attempt as
        `rules.on_overdue` says, with the exit code the engine reports for the stop (a bot
        stopped for silence keeps `heartbeat_lost`: `rules.kept_silent`)."""
        kill = self.force_stop(bot)
        outcome = on_overdue(overdue, limit_s, gone=kill.gone, exit_code=kill.exit_code,
                             detail=kill.detail)  # fmt: skip
        if outcome is not None:
            self.end_if_still(bot.id, bot.status, kept_silent(bot, outcome), bot.attempt)

    def stop_for_silence(self, bot: Bot) -> None:
        """A silent bot: the decision is stored first, judged again under the bot's row lock,
        and only once it is stored is the workload signalled; a database that cannot be
        written raises here, and nothing is signalled. The decision is the restart policy's
        next attempt (`active → starting`, the old attempt's workload then an orphan whatever
        the engine answers) or `active → stopping` (`heartbeat_lost`) until the workload is
        confirmed gone (`rules.STOP_FOR_SILENCE`, `rules.kept_silent`)."""
        limit_s = self.settings.heartbeat_lost_after_s
        detail = f"no heartbeat for {limit_s:g}s"
        with transaction(self.sessions) as session:
            locked = bot_records.lock_bot(session, bot.id)
            if locked.status != BotStatus.ACTIVE or locked.attempt != bot.attempt:
                return
            if not self.silent(locked):
                log.info("bot %s was heard from meanwhile; not stopped", bot.id)
                return
            if exit_report(session, locked) is not None:
                log.info("bot %s reported its exit meanwhile; not stopped for silence", bot.id)
                return
            old_ref = locked.runtime_ref
            lost = Outcome(BotStatus.FAILED, HEARTBEAT_LOST, None, detail)
            if next_attempt(locked, lost) is not None:
                end_attempt(session, locked, lost, source=Source.RECONCILER)
            else:
                target, reason = STOP_FOR_SILENCE
                transition(session, locked, target, reason=reason, source=Source.RECONCILER,
                           detail=detail)  # fmt: skip
        log.warning("bot %s: %s (heartbeat_lost); stopping its workload", bot.id, locked.status)
        if locked.status == BotStatus.STARTING:  # restarting: the old attempt's workload goes
            self.force_stop_ref(bot.id, old_ref)
        else:
            self.kill_overdue(locked, Overdue.HEARTBEAT, limit_s)  # as stored

    def force_stop(self, bot: Bot) -> Kill:
        """Stop the bot's workload (SIGTERM, then kill after `kill_after_s`); never raises for
        an engine that cannot be asked (then nothing is known)."""
        return self.force_stop_ref(bot.id, bot.runtime_ref)

    def force_stop_ref(self, bot_id: str, runtime_ref: str | None) -> Kill:
        """`force_stop` of one workload by its reference (an attempt the record has left)."""
        if not runtime_ref:
            return Kill()
        try:
            final = self.orchestrator.stop(runtime_ref, grace_s=self.settings.kill_after_s)
        except OrchestratorError as exc:
            log.warning("could not stop bot %s: %s", bot_id, exc)
            return Kill()
        if not final.is_gone:
            return Kill(detail=final.detail or "")
        return Kill(gone=True, exit_code=final.exit_code, detail=final.detail or "")
