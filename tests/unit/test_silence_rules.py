"""Silence is what the manager heard, and a bot stopped for it ends `heartbeat_lost` (issue 27,
item 5), the rules alone; the buffer's view of its own writes. Against a database and a
manager: tests/integration/resilience/test_unwritable_database.py."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import (
    STOP_FOR_SILENCE,
    Outcome,
    Overdue,
    heartbeat_lost,
    kept_silent,
    next_attempt,
    on_exit,
    on_overdue,
    on_workload_gone,
)

S = BotStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bot(status: BotStatus, reason: str) -> Bot:
    return Bot(id="b", status=status, status_reason=reason, attempt=1, restart_max_retries=1,
               restart_backoff_s=2.0, restart_on=None)  # fmt: skip


SILENCED = bot(S.STOPPING, "heartbeat_lost")
ASKED_TO_LEAVE = bot(S.STOPPING, "user")


@pytest.mark.parametrize(
    ("unstored_age_s", "lost"),
    [
        (None, True),  # nothing waits in the buffer: the stored heartbeat is all there is
        (1.0, False),  # heard a second ago, not written yet (the writes fail): not silence
        (30.0, False),  # heard exactly a budget ago
        (31.0, True),  # what waits is older than the budget: silent all the same
    ],
)
def test_a_heartbeat_heard_but_not_stored_counts(unstored_age_s: float | None, lost: bool) -> None:
    stored = T0  # a minute old
    judged = heartbeat_lost(stored, listening_since=T0 - timedelta(hours=1),
                            now=T0 + timedelta(seconds=60), budget_s=30,
                            unstored_age_s=unstored_age_s)  # fmt: skip
    assert judged is lost


def test_the_decision_is_a_move_to_stopping() -> None:
    assert tuple(STOP_FOR_SILENCE) == (S.STOPPING, "heartbeat_lost")


# How the workload of a bot in `stopping` ends → (status, reason): stopped for silence, it ends
# `heartbeat_lost` whatever happens; asked to leave, as before.
ENDS: list[tuple[Bot, Any, tuple[BotStatus, str]]] = [
    (SILENCED, lambda b: on_workload_gone(b, None), (S.FAILED, "heartbeat_lost")),
    (SILENCED, lambda b: on_workload_gone(b, 137), (S.FAILED, "heartbeat_lost")),
    (SILENCED, lambda b: on_exit(b, 0, "sigterm"), (S.FAILED, "heartbeat_lost")),
    (SILENCED, lambda b: on_exit(b, 1, None), (S.FAILED, "heartbeat_lost")),
    (
        SILENCED,
        lambda b: kept_silent(b, on_overdue(Overdue.LEAVE, 4, gone=True, exit_code=137)),
        (S.FAILED, "heartbeat_lost"),
    ),
    (ASKED_TO_LEAVE, lambda b: on_workload_gone(b, None), (S.COMPLETED, "exited")),
    (ASKED_TO_LEAVE, lambda b: on_exit(b, 0, None), (S.COMPLETED, "left")),
    (
        ASKED_TO_LEAVE,
        lambda b: kept_silent(b, on_overdue(Overdue.LEAVE, 4, gone=True, exit_code=137)),
        (S.COMPLETED, "killed_after_grace"),
    ),
]


@pytest.mark.parametrize(("stopping", "end", "expected"), ENDS)
def test_a_bot_stopped_for_silence_ends_heartbeat_lost(
    stopping: Bot, end: Any, expected: tuple[BotStatus, str]
) -> None:
    outcome: Outcome = end(stopping)
    assert (outcome.target, outcome.reason) == expected


def test_silence_waits_for_the_engines_word_before_ending() -> None:
    """Recorded `stopping` first, the bot ends only once its workload is confirmed gone."""
    assert on_overdue(Overdue.HEARTBEAT, 30, gone=False) is None
    assert on_overdue(Overdue.HEARTBEAT, 30, gone=True, exit_code=137) == Outcome(
        S.FAILED, "heartbeat_lost", 137, "no heartbeat for 30s"
    )


def test_the_restart_policy_is_asked_when_silence_is_judged_never_after() -> None:
    """A silent `active` bot is relaunched if the policy says so (the reconciler records
    `active → starting`); one already recorded `stopping` for silence was not, and never is."""
    lost = Outcome(S.FAILED, "heartbeat_lost", 137)
    assert next_attempt(bot(S.ACTIVE, "started"), lost) is not None  # default `on` lists it
    assert next_attempt(SILENCED, lost) is None
    assert next_attempt(ASKED_TO_LEAVE, Outcome(S.FAILED, "exited", 1)) is None


class Unwritable:
    """A sessionmaker whose database cannot be written."""

    def __call__(self) -> Any:
        raise OSError("database or disk is full")


def test_the_buffer_says_when_its_writes_fail_and_what_it_heard() -> None:
    buffer = HeartbeatBuffer(max_entries=10)
    assert not buffer.writes_failing(stalled_after_s=10)
    buffer.record("b", "digest")
    with pytest.raises(OSError):
        buffer.flush(Unwritable())  # type: ignore[arg-type]
    assert buffer.writes_failing(stalled_after_s=10)
    age = buffer.unstored_age("b")
    assert age is not None and age < 5, "the unwritten heartbeat went back to wait"
    assert buffer.unstored_age("never-heard") is None


def test_a_batch_waiting_on_a_lock_counts_as_heard_and_as_stalled() -> None:
    """A write that waits (a lock held by a backup) keeps its heartbeats visible; past the
    stall limit the writes count as failing."""
    buffer = HeartbeatBuffer(max_entries=10)
    buffer.record("b", "digest")
    entered, release = threading.Event(), threading.Event()

    class Waiting:
        def __call__(self) -> Any:
            entered.set()
            release.wait(10)
            raise OSError("database is locked")

    def flush() -> None:
        with contextlib.suppress(OSError):
            buffer.flush(Waiting())  # type: ignore[arg-type]

    writer = threading.Thread(target=flush)
    writer.start()
    try:
        assert entered.wait(10)
        assert buffer.unstored_age("b") is not None, "in flight, still heard"
        assert buffer.writes_failing(stalled_after_s=0), "waiting longer than the limit"
        assert not buffer.writes_failing(stalled_after_s=3600)
    finally:
        release.set()
        writer.join(10)
    assert buffer.writes_failing(stalled_after_s=3600), "then it failed"
