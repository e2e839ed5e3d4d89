"""The manager's periodic work: one `IntervalLoop` per job (reconciler, webhook sender, …).

APScheduler decides *when* a tick happens: every `interval_s`, plus a random jitter of up to a
tenth of it (so replicas and jobs do not fall into lockstep), one tick at a time per job, missed
ticks coalesced. The loop decides *whether* a tick runs and what its outcome means:

- a leader-only job runs only while this replica holds the leader lease
  (`manager/background/leader.py`); a replica that does not hold it is on standby, which is
  healthy;
- `on_lead` runs before the first run after the loop was not running as leader with a database
  that answers: at start, after standby, after the lease or `run_once` found the database
  unreachable (the reconciler then waits a heartbeat budget before judging silence);
- `run_once` raising is a failure; the exception never leaves the tick (the next one comes);
- after `FAILURES_TOLERATED` consecutive failures the loop is *failing*: `/readyz` answers 503
  with its last error, and each further attempt waits longer (the interval doubled per failure,
  capped), so a broken database is not hammered; the first success resets both;
- `last_ok_at`, `consecutive_failures` and the last `ERRORS_KEPT` errors are kept for `/readyz`
  and the metrics `botfleet_loop_*{loop}`.

Errors are kept as one short line (exception type and first line of its message, credentials in
URLs masked, never SQL parameters), so they can be shown to anyone who can read `/readyz`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from botfleet.manager.core import metrics

log = logging.getLogger(__name__)

FAILURES_TOLERATED = 3  # consecutive failures (about this many intervals) before "failing"
JITTER_FRACTION = 0.1  # each tick comes up to this share of the interval late
BACKOFF_FACTOR_MAX = 16  # a failing loop waits at most this many intervals between attempts…
BACKOFF_MAX_S = 60.0  # …and never more than this (or one interval, if that is longer)
ERRORS_KEPT = 5
ERROR_CHARS = 300
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")

#: "waiting": no run yet; "standby": another replica leads; "failing": see FAILURES_TOLERATED.
LoopState = Literal["waiting", "ok", "standby", "failing"]


class Lease(Protocol):
    """What a leader-only loop asks before each run (`leader.LeaderLease`)."""

    def hold(self) -> bool: ...


class StepsFailed(Exception):
    """Some steps of a pass failed; the others still ran (see `run_steps`)."""


class DatabaseUnreachable(Exception):
    """The database could not be asked (`leader.LeaseUnavailable` is one)."""


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be asked (down, unreachable, connection lost,
    no pooled connection free), as opposed to a query that failed on its own."""
    if isinstance(exc, DatabaseUnreachable | OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe(exc: BaseException) -> str:
    """One safe line: the type and first line of the message, without SQL or credentials."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        exc = exc.orig  # SQLAlchemy appends the statement and its parameters: leave them out
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if not isinstance(exc, StepsFailed):
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return _URL_CREDENTIALS.sub(r"\1***@", message)[:ERROR_CHARS]


def run_steps(steps: Iterable[Callable[[], Any]], *, what: str) -> None:
    """Run every step even if an earlier one raised, then raise `StepsFailed` naming the steps
    that did: one step's failure never starves the others, yet the loop still sees it."""
    failures: list[str] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            log.exception("%s step %s failed", what, step.__name__)
            failures.append(f"{step.__name__}: {describe(exc)}")
    if failures:
        raise StepsFailed("; ".join(failures))


@dataclass(frozen=True)
class LoopError:
    at: datetime
    message: str


@dataclass(frozen=True)
class LoopHealth:
    """A snapshot of one loop, as `/readyz` shows it."""

    name: str
    interval_s: float
    state: LoopState
    last_ok_at: datetime | None
    consecutive_failures: int
    last_errors: tuple[LoopError, ...]

    @property
    def failing(self) -> bool:
        return self.state == "failing"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "interval_s": self.interval_s,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_errors[-1].message if self.last_errors else None,
            "last_errors": [
                {"at": error.at.isoformat(), "error": error.message} for error in self.last_errors
            ],
        }


class IntervalLoop:
    """Runs `run_once` every `interval_s` (see the module docstring); `tick` is the job."""

    def __init__(
        self,
        name: str,
        run_once: Callable[[], Any],
        *,
        interval_s: float,
        lease: Lease | None = None,
        on_lead: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.on_lead = on_lead
        self._leading = False  # the last tick ran as leader, and the database answered
        self.interval_s = interval_s
        self.lease = lease
        self.clock = clock
        self.jitter_s = interval_s * JITTER_FRACTION
        self._mutex = threading.Lock()  # ticks write from the scheduler's thread, /readyz reads
        self._state: LoopState = "waiting"
        self._last_ok_at: datetime | None = None
        self._consecutive_failures = 0
        self._errors: deque[LoopError] = deque(maxlen=ERRORS_KEPT)
        self._resume_at = 0.0  # clock() before which ticks are skipped (backing off)

    # ---- scheduling ------------------------------------------------------------------------

    def trigger(self) -> IntervalTrigger:
        """Every interval, up to `jitter_s` late, in UTC."""
        return IntervalTrigger(seconds=self.interval_s, jitter=self.jitter_s, timezone="UTC")

    def schedule(self, scheduler: BaseScheduler) -> None:
        scheduler.add_job(
            self.tick,
            self.trigger(),
            id=self.name,
            name=f"{self.name} loop",
            max_instances=1,  # a slow pass is never overlapped by the next one
            coalesce=True,  # ticks missed meanwhile run once, not in a burst
        )

    def backoff_s(self, consecutive_failures: int) -> float:
        """How long a loop waits before its next attempt after this many failures in a row."""
        if consecutive_failures < FAILURES_TOLERATED:
            return 0.0
        factor = min(2 ** (consecutive_failures - FAILURES_TOLERATED + 1), BACKOFF_FACTOR_MAX)
        return min(self.interval_s * factor, max(BACKOFF_MAX_S, self.interval_s))

    # ---- one tick --------------------------------------------------------------------------

    def tick(self) -> None:
        """One scheduled call. Never raises: a failure is recorded and the next tick comes."""
        if self.clock() < self._resume_at:
            return  # backing off after repeated failures
        try:
            if self.lease is not None and not self._hold():
                self._standby()
                return
            if not self._leading:
                self._leading = True
                if self.on_lead is not None:
                    self.on_lead()
            self.run_once()
        except Exception as exc:
            if database_unreachable(exc):
                self._leading = False
            self._failed(exc)
        else:
            self._succeeded()

    def _hold(self) -> bool:
        """The lease's answer; a lease that cannot be asked means the lead must start again."""
        assert self.lease is not None
        try:
            return self.lease.hold()
        except Exception:
            self._leading = False
            raise

    def _succeeded(self) -> None:
        now = datetime.now(UTC)
        with self._mutex:
            if self._consecutive_failures:
                log.info(
                    "%s loop recovered after %d failures", self.name, self._consecutive_failures
                )
            self._state, self._last_ok_at = "ok", now
            self._consecutive_failures, self._resume_at = 0, 0.0
        metrics.LOOP_LAST_OK.labels(self.name).set(now.timestamp())
        metrics.LOOP_CONSECUTIVE_FAILURES.labels(self.name).set(0)

    def _standby(self) -> None:
        """Another replica leads: nothing to run, nothing failing."""
        self._leading = False
        with self._mutex:
            self._state, self._consecutive_failures, self._resume_at = "standby", 0, 0.0
        metrics.LOOP_CONSECUTIVE_FAILURES.labels(self.name).set(0)

    def _failed(self, exc: Exception) -> None:
        message = describe(exc)
        with self._mutex:
            self._consecutive_failures += 1
            failures = self._consecutive_failures
            self._errors.append(LoopError(datetime.now(UTC), message))
            if failures >= FAILURES_TOLERATED:
                self._state = "failing"
            self._resume_at = self.clock() + self.backoff_s(failures)
        metrics.LOOP_FAILURES.labels(self.name).inc()
        metrics.LOOP_CONSECUTIVE_FAILURES.labels(self.name).set(failures)
        if failures in (1, FAILURES_TOLERATED):  # the trace as a streak starts and turns failing
            log.error("%s loop failed (%d in a row)", self.name, failures, exc_info=exc)
        else:
            log.warning("%s loop failed (%d in a row): %s", self.name, failures, message)

    # ---- health ----------------------------------------------------------------------------

    def health(self) -> LoopHealth:
        with self._mutex:
            return LoopHealth(
                name=self.name,
                interval_s=self.interval_s,
                state=self._state,
                last_ok_at=self._last_ok_at,
                consecutive_failures=self._consecutive_failures,
                last_errors=tuple(self._errors),
            )
