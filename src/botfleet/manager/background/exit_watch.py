"""A bot ends only once none of its processes remain: the exits its runtime reported, watched.

The runtime's `exited` is judged and kept on its attempt (`services/callbacks.py`), while the
bot keeps its status: a bot that double-forks or setsid's a child and exits would otherwise
read `completed` while its child runs. This watcher keeps those exits in memory (bot, attempt,
workload) and asks the engine about each, soon and then less often (`FIRST_CHECK_S`, doubling
to `MAX_CHECK_S`), from one thread of its own, whatever the number of bots: a thousand bots
stopping at once hold no launcher thread. Once the engine confirms a workload is gone, the
attempt ends with the stored report under the bot's row lock, if that attempt is still the
bot's and still waits. A workload still running an exit grace after the report (the stop grace
plus `kill_after_s`: a child left behind) is stopped (on the process backend: its whole
cgroup), on a small pool of its own, and the bot ends once it is gone. An engine that cannot
be asked, or cannot tell, is waited for: nothing ends on it.

What this replica's memory loses (a restart, an `exited` that reached another replica) the
reconciler finds on its next pass (`reconciler.context.Context.after_report`); `resume` picks
up at start the exits that were waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.reconciler.context import exit_grace_s
from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import NotFound
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import LIVE, Source
from botfleet.manager.lifecycle.rules import on_workload_gone
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.attempts import end_attempt, exit_report, pending_exits
from botfleet.manager.services.callbacks import AwaitedExit
from botfleet.manager.services.launcher import Launcher
from botfleet.orchestrators.base import LABEL_BOT_ID, Workload, WorkloadState, WorkloadStatus

log = logging.getLogger(__name__)

FIRST_CHECK_S = 0.05  # a runtime reports `exited` a moment before its process is gone
MAX_CHECK_S = 1.0
LIST_ABOVE = 8  # more exits due at once than this: one listing answers for all of them
STOP_WORKERS = 4  # stops in flight at once (each may take `kill_after_s`)


@dataclass
class _Watched:
    exit: AwaitedExit
    reported_at: float  # monotonic
    due: float
    delay_s: float = FIRST_CHECK_S
    stop_sent_at: float | None = None
    stopping: bool = False


class ExitWatch:
    """See the module docstring. `watch` after an `exited` is committed; `check_due` is one
    round (the thread's, or a test's); `start`/`close` run and end the thread."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        launcher: Launcher,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions, self.settings, self.launcher = sessions, settings, launcher
        self.clock = clock
        self._watched: dict[str, _Watched] = {}  # by bot id: one current attempt per bot
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stops = ThreadPoolExecutor(STOP_WORKERS, thread_name_prefix="exit-watch-stop")

    # ---- what the rest of the manager calls --------------------------------------------------

    def watch(self, exit: AwaitedExit, *, reported_s_ago: float = 0.0) -> None:
        """Wait for this exit's workload to go (a repeat of a watched exit changes nothing)."""
        now = self.clock()
        with self._mutex:
            known = self._watched.get(exit.bot_id)
            if known is not None and known.exit == exit:
                return
            reported = now - max(reported_s_ago, 0.0)
            self._watched[exit.bot_id] = _Watched(exit, reported, due=now + FIRST_CHECK_S)
        self._wake.set()

    def resume(self) -> None:
        """Watch the exits reported before this manager started (kept on their attempts)."""
        with self.sessions() as session:
            waiting = pending_exits(session)
        now = utcnow()
        for pending in waiting.values():
            if pending.runtime_ref is not None:
                age = (now - pending.reported_at) / timedelta(seconds=1)
                exit = AwaitedExit(pending.bot_id, pending.attempt, pending.runtime_ref)
                self.watch(exit, reported_s_ago=age)

    def pending(self) -> list[AwaitedExit]:
        with self._mutex:
            return [watched.exit for watched in self._watched.values()]

    def start(self) -> None:
        try:
            self.resume()
        except Exception as exc:  # the reconciler finds them too
            log.warning("exits reported before the start not resumed: %s", exc)
        self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._stops.shutdown(wait=True, cancel_futures=True)

    # ---- the rounds --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                wait_s = self.check_due()
            except Exception:  # never leaves the thread: the next round comes
                log.exception("exit watch round failed")
                wait_s = MAX_CHECK_S
            self._wake.wait(timeout=wait_s)
            self._wake.clear()

    def check_due(self) -> float:
        """Ask the engine about every exit due now; return how long until the next is due."""
        now = self.clock()
        with self._mutex:
            due = [w for w in self._watched.values() if w.due <= now]
        listing = self._listing() if len(due) > LIST_ABOVE else None
        for watched in due:
            status = self._status(watched.exit, listing)
            if status is not None and status.is_gone:
                if self._finish(watched, status):
                    continue
            elif watched.stopping:
                pass  # a stop is under way: look again when it is done, or as planned
            elif self._outlived(watched):
                self._stop(watched)
            self._plan(watched)
        with self._mutex:
            dues = [w.due for w in self._watched.values()]
        return max(min(dues) - self.clock(), 0.0) if dues else MAX_CHECK_S

    def _plan(self, watched: _Watched) -> None:
        """The next look: sooner first, then less often; never later than the exit grace."""
        now = self.clock()
        watched.due = now + watched.delay_s
        watched.delay_s = min(watched.delay_s * 2, MAX_CHECK_S)
        if watched.stop_sent_at is None:
            deadline = watched.reported_at + exit_grace_s(self.settings)
            watched.due = max(min(watched.due, deadline), now)

    def _listing(self) -> dict[str, Workload] | None:
        try:
            return {w.runtime_ref: w for w in self.launcher.workloads()}
        except Exception as exc:
            log.info("exit watch: cannot list the workloads: %s", exc)
            return None

    def _status(
        self, exit: AwaitedExit, listing: dict[str, Workload] | None
    ) -> WorkloadStatus | None:
        """What the engine positively knows of the workload; None: it cannot tell now. A "not
        found" is believed only once a listing of the bot's workloads confirms it."""
        ref = exit.runtime_ref
        try:
            if listing is not None and ref in listing:
                status = listing[ref].status
            else:
                status = self.launcher.orchestrator.inspect(ref)
                if status.state == WorkloadState.NOT_FOUND:
                    found = self.launcher.workloads(**{LABEL_BOT_ID: exit.bot_id})
                    if any(w.runtime_ref == ref for w in found):
                        return None
        except Exception as exc:
            log.info("exit watch: cannot inspect bot %s: %s", exit.bot_id, exc)
            return None
        return None if status.state == WorkloadState.UNKNOWN else status

    def _outlived(self, watched: _Watched) -> bool:
        """Past the exit grace and not stopped yet (or the last stop failed a while ago)."""
        now = self.clock()
        if now < watched.reported_at + exit_grace_s(self.settings):
            return False
        retry_s = self.settings.kill_after_s + MAX_CHECK_S * 5
        return watched.stop_sent_at is None or now - watched.stop_sent_at >= retry_s

    # ---- ending and stopping -----------------------------------------------------------------

    def _finish(self, watched: _Watched, status: WorkloadStatus) -> bool:
        """End the attempt with its report (True: done with this exit, ended or not)."""
        exit = watched.exit
        try:
            with transaction(self.sessions) as session:
                bot = bot_records.lock_bot(session, exit.bot_id)
                report = exit_report(session, bot) if self._still(bot, exit) else None
                if report is not None:
                    outcome = on_workload_gone(bot, status.exit_code, status.detail,
                                               status.reason, report=report)  # fmt: skip
                    end_attempt(session, bot, outcome, source=Source.RUNTIME)
                    log.debug("bot %s: its workload is gone; %s (%s)",
                             exit.bot_id, bot.status, outcome.reason)  # fmt: skip
        except NotFound:
            pass  # deleted meanwhile
        except Exception as exc:  # the database: try again at the next look
            log.warning("bot %s: its exit could not be stored yet: %s", exit.bot_id, exc)
            return False
        self._forget(watched)
        return True

    @staticmethod
    def _still(bot: Bot, exit: AwaitedExit) -> bool:
        """The bot is still live, at the watched attempt, with the watched workload."""
        return (
            bot.status in LIVE
            and bot.attempt == exit.attempt
            and bot.runtime_ref == exit.runtime_ref
        )

    def _stop(self, watched: _Watched) -> None:
        """Stop what outlived the exit grace, if its exit still waits (the reconciler may have
        ended it meanwhile: then the workload pass deals with what runs)."""
        exit = watched.exit
        try:
            with self.sessions() as session:
                bot = bot_records.get_bot(session, exit.bot_id, user_id=None)
                waiting = self._still(bot, exit) and exit_report(session, bot) is not None
        except NotFound:
            waiting = False
        except Exception as exc:
            log.info("exit watch: cannot read bot %s: %s", exit.bot_id, exc)
            return
        if not waiting:
            self._forget(watched)
            return
        log.warning("bot %s: its workload outlived its exit report by %gs; stopping it",
                    exit.bot_id, exit_grace_s(self.settings))  # fmt: skip
        watched.stop_sent_at, watched.stopping = self.clock(), True
        self._stops.submit(self._stop_now, watched)

    def _stop_now(self, watched: _Watched) -> None:
        try:
            self.launcher.orchestrator.stop(
                watched.exit.runtime_ref, grace_s=self.settings.kill_after_s
            )
        except Exception as exc:
            log.warning("bot %s: could not stop its workload: %s", watched.exit.bot_id, exc)
        finally:
            watched.stopping = False
            watched.due, watched.delay_s = self.clock(), FIRST_CHECK_S
            self._wake.set()

    def _forget(self, watched: _Watched) -> None:
        with self._mutex:
            if self._watched.get(watched.exit.bot_id) is watched:
                del self._watched[watched.exit.bot_id]
