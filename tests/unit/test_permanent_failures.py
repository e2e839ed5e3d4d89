"""A failure the bot declares permanent (`BotFailed`, e.g. a revoked platform token) is never
retried by a restart policy: relaunching would only fail the same way, in a loop."""

from __future__ import annotations

from typing import Any

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import Restart, next_attempt, on_exit, restart_trigger
from botfleet.manager.lifecycle.states import PERMANENT_FAILURE_REASONS

S = BotStatus
EVERY_TRIGGER = ["crash", "heartbeat_lost", "start_failed"]


def bot(status: BotStatus, **fields: Any) -> Bot:
    """A bot row in memory with a generous restart policy, never stored."""
    values: dict[str, Any] = {
        "id": "b1",
        "attempt": 1,
        "runtime_ref": "ref-1",
        "next_attempt_at": None,
        "restart_max_retries": 5,
        "restart_backoff_s": 1.0,
        "restart_on": EVERY_TRIGGER,
    }
    return Bot(status=status, **(values | fields))


def test_platform_unauthorized_is_permanent() -> None:
    assert "platform_unauthorized" in PERMANENT_FAILURE_REASONS


@pytest.mark.parametrize("reason", ["platform_unauthorized", "invalid_config", "missing_secret"])
@pytest.mark.parametrize("status", [S.STARTING, S.ACTIVE])
def test_a_permanent_failure_is_stored_with_its_reason_and_not_restarted(
    status: BotStatus, reason: str
) -> None:
    row = bot(status)
    outcome = on_exit(row, 1, reason, "refused")
    assert (outcome.target, outcome.reason) == (S.FAILED, reason)
    assert restart_trigger(row, outcome) is None
    assert next_attempt(row, outcome) is None


@pytest.mark.parametrize(("status", "reason"), [(S.STARTING, None), (S.ACTIVE, "crashed")])
def test_an_ordinary_failure_is_still_restarted(status: BotStatus, reason: str | None) -> None:
    row = bot(status)
    outcome = on_exit(row, 1, reason)
    assert next_attempt(row, outcome) == Restart(attempt=2, delay_s=1.0)
