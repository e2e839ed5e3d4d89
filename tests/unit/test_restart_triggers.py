"""Restart triggers (`restart.on`) as a table, and a failed start retried with the same backoff and
limit; pure. Through the reconciler and the API:
tests/integration/services/test_restart_policy.py."""

from __future__ import annotations

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus, is_allowed
from botfleet.manager.lifecycle.rules import Outcome, Restart, next_attempt

S = BotStatus


START_FAILED = Outcome(S.FAILED, "exited_before_started", 1)


CRASH = Outcome(S.FAILED, "crashed", 1)


SILENT = Outcome(S.FAILED, "heartbeat_lost")


def bot(status: S, *, on: list[str] | None, attempt: int = 1, retries: int = 2) -> Bot:
    return Bot(
        id="b",
        status=status,
        attempt=attempt,
        restart_max_retries=retries,
        restart_backoff_s=2.0,
        restart_on=on,
    )


# (status, restart.on, outcome) -> restarted?
TRIGGER_CASES = [
    (S.STARTING, None, START_FAILED, False),  # the default never retries a failed start
    (S.STARTING, ["start_failed"], START_FAILED, True),
    (S.STARTING, ["crash", "heartbeat_lost"], START_FAILED, False),
    (S.ACTIVE, None, CRASH, True),  # the default: what every policy did before `on`
    (S.ACTIVE, None, SILENT, True),
    (S.ACTIVE, ["crash"], SILENT, False),
    (S.ACTIVE, ["heartbeat_lost"], CRASH, False),
    (S.ACTIVE, ["start_failed"], CRASH, False),
    (S.ACTIVE, [], CRASH, False),  # an empty list retries nothing
    (S.STOPPING, ["crash", "heartbeat_lost", "start_failed"], CRASH, False),
]


@pytest.mark.parametrize(("status", "on", "outcome", "restarted"), TRIGGER_CASES)
def test_restart_triggers(
    status: S, on: list[str] | None, outcome: Outcome, restarted: bool
) -> None:
    assert (next_attempt(bot(status, on=on), outcome) is not None) is restarted


def test_a_failed_start_is_retried_with_the_same_backoff_and_limit() -> None:
    on = ["start_failed"]
    assert next_attempt(bot(S.STARTING, on=on, attempt=2), START_FAILED) == Restart(3, 4.0)
    assert next_attempt(bot(S.STARTING, on=on, attempt=3), START_FAILED) is None  # 2 used
    # The table allows the move the retry makes, and only from starting.
    assert is_allowed("starting", "starting")
    assert not is_allowed("requested", "requested")
