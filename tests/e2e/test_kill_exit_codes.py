"""A bot the reconciler has to stop keeps the exit code its workload really ended with (issue
12, item 8): the engine's code for the stop, or null when unknown; never one made up.

The runtime answers SIGTERM by leaving gracefully and exiting 0 (runtime/runner.py), so a
`silent` bot stopped on its start timeout really ends 0; one that also ignores the leave is
killed with SIGKILL after BOTFLEET_KILL_AFTER_S and really ends 137.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine_events import ContainerExits
from tests.support import Manager, wait_for_status, wait_until

# Read by conftest's any_backend_manager: a silent bot fails after 3 s.
MANAGER_ENV = {"BOTFLEET_START_TIMEOUT_S": "3"}


@pytest.fixture
def manager(any_backend_manager: Manager) -> Manager:
    return any_backend_manager


def timed_out(manager: Manager, config: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Start a bot that never reports `started`; return its record from the moment it has
    failed, and the exit code the engine itself reports (docker; None on the process backend)."""
    exits = ContainerExits() if manager.backend == "docker" else None
    try:
        _, client = manager.new_user()
        bot = client.post("/bots", json={"bot": "demo", "config": config}).json()
        done = wait_for_status(client, bot["id"], {"failed", "completed", "active"}, timeout=30)
        engine_code = None
        if exits is not None:
            seen = exits
            engine_code = wait_until(
                lambda: seen.of({bot["id"]}).get(bot["id"]), timeout=15, what="the container's end"
            )[-1]
    finally:
        if exits is not None:
            exits.close()
    attempts = client.get(f"/bots/{bot['id']}/attempts").json()["items"]
    assert [a["exit_code"] for a in attempts] == [done["exit_code"]], attempts
    done["logs"] = client.get(f"/bots/{bot['id']}/logs", params={"tail": 50}).text
    return done, engine_code


def test_a_silent_bot_stopped_on_its_start_timeout_keeps_its_real_exit_code(
    manager: Manager,
) -> None:
    done, engine_code = timed_out(manager, {"silent": True})
    assert (done["status"], done["status_reason"]) == ("failed", "start_timeout")
    # It left on SIGTERM and said so: its 0 is the real exit code, recorded as soon as it failed.
    assert "SIGTERM received" in done["logs"] and "exiting with code 0" in done["logs"]
    assert done["exit_code"] == 0
    if manager.backend == "docker":
        assert engine_code == 0


def test_a_silent_bot_that_ignores_sigterm_is_recorded_killed(manager: Manager) -> None:
    done, engine_code = timed_out(manager, {"silent": True, "ignore_leave": True})
    assert (done["status"], done["status_reason"]) == ("failed", "start_timeout")
    assert done["exit_code"] == 137, "SIGKILL after the kill delay: 128 + 9, never 0 or null"
    assert "ignoring it (ignore_leave)" in done["logs"], "it did ignore the SIGTERM"
    if manager.backend == "docker":
        assert engine_code == 137
