"""Restart triggers (`restart.on`) and the per-user default restart policy: a failed start is
retried only when the policy lists `start_failed`, with the same backoff; an admin-set default
applies to bots that name no policy; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import httpx

from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import Outcome
from tests.fakes import FakeOrchestrator, launch_failed
from tests.integration.services.test_reconciler import (  # noqa: F401 - fleet, orchestrator, reconciler: fixtures
    StrictReconciler,
    backdate,
    fleet,
    new_bot,
    orchestrator,
    read,
    reconciler,
)
from tests.support import Manager, transitions, wait_for_status

# ---- end to end on the process backend ------------------------------------------------------


def start(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/bots", json={"bot": "demo", "config": {}, **body})


def test_start_failures_are_retried_when_listed(manager: Manager) -> None:
    _, client = manager.new_user()
    policy = {"max_retries": 2, "backoff_s": 0.2, "on": ["start_failed"]}
    response = start(client, config={"fail_on_start": True}, restart=policy)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["restart"] == policy
    done = wait_for_status(client, created["id"], {"failed", "completed"}, timeout=60)
    assert done["status"] == "failed" and done["attempt"] == 3, done
    moves = [(f, t, why) for f, t, why, _ in transitions(client, created["id"])]
    assert moves == [
        ("requested", "starting", "launching"),
        ("starting", "starting", "restarting"),
        ("starting", "starting", "restarting"),
        ("starting", "failed", "start_failed"),
    ]
    attempts = client.get(f"/bots/{created['id']}/attempts").json()["items"]
    assert [a["outcome"] for a in attempts] == ["start_failed"] * 3


def test_start_failure_is_final_without_start_failed(manager: Manager) -> None:
    _, client = manager.new_user()
    response = start(
        client, config={"fail_on_start": True}, restart={"max_retries": 2, "backoff_s": 0.2}
    )
    created = response.json()
    assert created["restart"]["on"] == ["crash", "heartbeat_lost"]
    done = wait_for_status(client, created["id"], {"failed", "completed"}, timeout=60)
    assert done["status"] == "failed" and done["attempt"] == 1


def test_per_user_default_restart_policy(manager: Manager) -> None:
    user, client = manager.new_user()
    default = {"max_retries": 1, "backoff_s": 0.2, "on": ["crash"]}
    with manager.admin() as admin:
        changed = admin.patch(f"/admin/users/{user['id']}", json={"default_restart": default})
        assert changed.status_code == 200, changed.text
        assert changed.json()["default_restart"] == default
        # Bad input: 422, and the default stays what it was.
        for bad in (
            {"max_retries": 1, "on": ["reboot"]},
            {"max_retries": 1, "on": ["crash", "crash"]},
            {"max_retries": -1},
            {"max_retries": 1, "extra": True},
        ):
            refused = admin.patch(f"/admin/users/{user['id']}", json={"default_restart": bad})
            assert refused.status_code == 422, (bad, refused.text)
        kept = admin.get(f"/admin/users/{user['id']}").json()
        assert kept["default_restart"] == default
        # A PATCH that does not name it leaves it alone.
        admin.patch(f"/admin/users/{user['id']}", json={"max_concurrent_bots": 7})
        assert admin.get(f"/admin/users/{user['id']}").json()["default_restart"] == default

    # A bot naming no policy gets the default, and is restarted once after a crash.
    crashing = start(client, config={"crash_after_s": 0.5}).json()
    assert crashing["restart"] == default
    done = wait_for_status(client, crashing["id"], {"failed", "completed"}, timeout=60)
    assert done["status"] == "failed" and done["attempt"] == 2, done

    # A bot naming its own policy keeps it.
    own = start(client, restart={"max_retries": 0, "backoff_s": 1}).json()
    assert own["restart"] == {"max_retries": 0, "backoff_s": 1.0, "on": ["crash", "heartbeat_lost"]}
    client.post(f"/bots/{own['id']}/stop")

    # null removes the default: the next bot has no restarts.
    with manager.admin() as admin:
        cleared = admin.patch(f"/admin/users/{user['id']}", json={"default_restart": None})
        assert cleared.status_code == 200 and cleared.json()["default_restart"] is None
    plain = start(client).json()
    assert plain["restart"]["max_retries"] == 0
    client.post(f"/bots/{plain['id']}/stop")
    wait_for_status(client, plain["id"], {"completed", "failed"})


def test_bad_restart_triggers_are_refused_and_create_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    for on in (["reboot"], ["crash", "crash"], "crash", [1]):
        response = start(client, restart={"max_retries": 1, "on": on})
        assert response.status_code == 422, (on, response.text)
    assert client.get("/bots").json()["items"] == []


def test_a_user_cannot_set_its_own_default(manager: Manager) -> None:
    """The default is the admin's: a user's key on the admin route is refused, nothing changes."""
    user, client = manager.new_user()
    response = client.patch(
        f"/admin/users/{user['id']}", json={"default_restart": {"max_retries": 5}}
    )
    assert response.status_code in (401, 403)
    with manager.admin() as admin:
        assert admin.get(f"/admin/users/{user['id']}").json()["default_restart"] is None


# ---- the launch path and the reconciler, with a fake engine ----------------------------------

# The fake-engine fixtures of test_reconciler.py beside this file (fleet, orchestrator, reconciler)


def test_a_refused_launch_is_retried_then_final(
    fleet: Any,  # noqa: F811
    orchestrator: FakeOrchestrator,  # noqa: F811
    reconciler: StrictReconciler,  # noqa: F811
) -> None:
    orchestrator.launch_error = launch_failed("image_not_found")
    restart = {"max_retries": 1, "backoff_s": 0.0, "on": ["start_failed"]}
    bot_id = new_bot(fleet, restart=restart)
    fleet.launcher.launch(bot_id)
    waiting = read(fleet, bot_id)
    # The move back into starting counts the next attempt; it waits for its backoff.
    assert (waiting.status, waiting.attempt, waiting.status_reason) == ("starting", 2, "restarting")
    assert waiting.runtime_ref is None
    assert waiting.next_attempt_at is not None
    reconciler.reconcile_starting()  # the backoff (0 s) is over: attempt 2, refused again
    done = read(fleet, bot_id)
    assert (done.status, done.attempt, done.status_reason) == ("failed", 2, "image_not_found")
    assert orchestrator.calls["launch"] == 2


def test_a_stale_repair_never_ends_the_restarted_attempt(
    fleet: Any,  # noqa: F811
    orchestrator: FakeOrchestrator,  # noqa: F811
) -> None:
    """starting → starting keeps the status, so a repair judged on attempt 1 must not land on
    attempt 2: it is checked against the attempt too (without it, the retry would be eaten)."""
    orchestrator.launch_error = launch_failed("launch_failed")
    bot_id = new_bot(fleet, restart={"max_retries": 3, "backoff_s": 60, "on": ["start_failed"]})
    fleet.launcher.launch(bot_id)  # attempt 1 refused: attempt 2 waits for its backoff
    backdate(fleet, bot_id, 120, "next_attempt_at")
    orchestrator.launch_error = None
    fleet.launcher.relaunch(bot_id)
    assert read(fleet, bot_id).runtime_ref is not None
    late = Outcome(BotStatus.FAILED, "exited_before_started", 1)
    ctx = fleet.context()
    ctx.end_if_still(bot_id, BotStatus.STARTING, late, 1)
    kept = read(fleet, bot_id)
    assert (kept.status, kept.attempt, kept.runtime_ref is not None) == ("starting", 2, True)
    ctx.end_if_still(bot_id, BotStatus.STARTING, late)  # unguarded: it would end attempt 2
    assert read(fleet, bot_id).attempt == 3


def test_cli_sets_and_clears_a_users_default(manager: Manager, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from botfleet.cli.main import app
    from tests.support import ADMIN_TOKEN

    user, _ = manager.new_user()
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOTFLEET_KEY": None,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
    }
    args = ["users", "restart", user["id"], "--retries", "2", "--on", "start_failed"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    with manager.admin() as admin:
        shown = admin.get(f"/admin/users/{user['id']}").json()["default_restart"]
        assert shown == {"max_retries": 2, "backoff_s": 5.0, "on": ["start_failed"]}
        bad = CliRunner().invoke(app, [*args[:3], "--on", "reboot"], env=env)
        assert bad.exit_code == 2, bad.output  # 422: nothing changed
        assert admin.get(f"/admin/users/{user['id']}").json()["default_restart"] == shown
        cleared = CliRunner().invoke(app, ["users", "restart", user["id"], "--clear"], env=env)
        assert cleared.exit_code == 0, cleared.output
        assert admin.get(f"/admin/users/{user['id']}").json()["default_restart"] is None
