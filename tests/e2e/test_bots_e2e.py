"""End to end on every backend that runs here (real bot processes, then real containers), with
a real manager, Redis and database."""

from __future__ import annotations

import httpx
import pytest

from tests.support import Manager, transitions, wait_for_command, wait_for_status


@pytest.fixture
def manager(any_backend_manager: Manager) -> Manager:
    return any_backend_manager


def start(client: httpx.Client, **body: object) -> dict:
    response = client.post("/bots", json={"bot": "demo", "config": {}, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_full_lifecycle_start_reconfigure_stop(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, name="standup", config={"greeting": "hi"}, labels={"team": "a"})
    assert bot["status"] in ("requested", "starting")
    assert "secrets" not in bot

    active = wait_for_status(client, bot["id"], {"active"})
    assert active["runtime_ref"] and active["attempt"] == 1 and active["active_at"]

    response = client.patch(f"/bots/{bot['id']}/config", json={"config": {"greeting": "hello"}})
    assert response.status_code == 202, response.text
    command = response.json()
    assert command["action"] == "reconfigure" and command["config_version"] == 2
    acked = wait_for_command(client, bot["id"], command["id"], {"acked", "failed"})
    assert acked["status"] == "acked", acked
    after = client.get(f"/bots/{bot['id']}").json()
    assert after["config"] == {"greeting": "hello"} and after["config_version"] == 2

    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    done = wait_for_status(client, bot["id"], {"completed", "failed"})
    assert done["status"] == "completed" and done["exit_code"] == 0 and done["ended_at"]

    steps = [(f, t, src) for f, t, _, src in transitions(client, bot["id"])]
    assert steps == [
        ("requested", "starting", "orchestrator"),
        ("starting", "active", "runtime"),
        ("active", "stopping", "api"),
        ("stopping", "completed", "runtime"),
    ]
    commands = client.get(f"/bots/{bot['id']}/commands").json()["items"]
    assert [c["action"] for c in commands] == ["leave", "reconfigure"]  # newest first
    attempts = client.get(f"/bots/{bot['id']}/attempts").json()["items"]
    assert [(a["attempt"], a["runtime_ref"], a["exit_code"]) for a in attempts] == [
        (1, active["runtime_ref"], 0)
    ]
    assert commands[0]["status"] == "acked"

    logs = client.get(f"/bots/{bot['id']}/logs", params={"tail": 50})
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
    assert logs.text.strip(), "the bot's output should be in its logs"

    # Stop is idempotent on an ended bot, and changes nothing.
    again = client.post(f"/bots/{bot['id']}/stop")
    assert again.status_code == 202 and again.json()["status"] == "completed"
    assert len(transitions(client, bot["id"])) == 4


def test_crash_fails_with_exit_code_and_reason(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, config={"crash_after_s": 0.5})
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert done["status"] == "failed"
    assert done["exit_code"] == 1 and done["status_reason"] == "crashed"
    last = client.get(f"/bots/{bot['id']}/transitions").json()["items"][-1]
    assert (last["from"], last["to"], last["source"]) == ("active", "failed", "runtime")
    assert "RuntimeError" in last["detail"] or last["detail"], last


def test_failure_on_start(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, config={"fail_on_start": True})
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert done["status"] == "failed" and done["exit_code"] == 1
    assert done["status_reason"] == "start_failed"
    assert done["active_at"] is None
    assert [(f, t) for f, t, _, _ in transitions(client, bot["id"])] == [
        ("requested", "starting"),
        ("starting", "failed"),
    ]


def test_refused_reconfigure_is_a_failed_command_with_the_bots_error(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, config={"refuse_reconfigure": True})
    wait_for_status(client, bot["id"], {"active"})
    command = client.patch(f"/bots/{bot['id']}/config", json={"config": {"x": 1}}).json()
    failed = wait_for_command(client, bot["id"], command["id"], {"acked", "failed"})
    assert failed["status"] == "failed" and failed["error"], failed
    current = client.get(f"/bots/{bot['id']}").json()
    assert current["status"] == "active", "a refused reconfigure does not end the bot"
    assert current["config"] == {"refuse_reconfigure": True} and current["config_version"] == 1
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed"})


def test_stop_during_starting(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, config={"start_delay_s": 30})
    wait_for_status(client, bot["id"], {"starting"})
    response = client.post(f"/bots/{bot['id']}/stop")
    assert response.status_code == 202 and response.json()["status"] == "stopping"
    done = wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed", done
    assert done["active_at"] is None, "a bot stopped while starting never becomes active"
    steps = [(f, t) for f, t, _, _ in transitions(client, bot["id"])]
    assert steps[:2] == [("requested", "starting"), ("starting", "stopping")]
    assert steps[-1] == ("stopping", "completed")


def test_stop_before_launch_cancels(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = start(client, start_at="2099-01-01T00:00:00Z")
    assert client.get(f"/bots/{bot['id']}").json()["status"] == "requested"
    assert client.post(f"/bots/{bot['id']}/stop").json()["status"] == "completed"
    assert transitions(client, bot["id"]) == [("requested", "completed", "cancelled", "api")]


def test_list_filters_and_pagination(manager: Manager) -> None:
    _, client = manager.new_user()
    later = "2099-01-01T00:00:00Z"  # stays `requested`: no processes needed for this test
    ids = [start(client, start_at=later, labels={"n": str(i), "team": "x"})["id"] for i in range(5)]
    start(client, start_at=later, labels={"team": "y"})

    page = client.get("/bots", params={"label": "team:x", "limit": 2}).json()
    seen = [b["id"] for b in page["items"]]
    while page["next_cursor"]:
        page = client.get(
            "/bots", params={"label": "team:x", "limit": 2, "cursor": page["next_cursor"]}
        ).json()
        seen += [b["id"] for b in page["items"]]
    assert seen == list(reversed(ids)), "newest first, every bot once"

    one = client.get("/bots", params=[("label", "team:x"), ("label", "n:3")]).json()["items"]
    assert [b["id"] for b in one] == [ids[3]]
    assert client.get("/bots", params={"status": "active"}).json()["items"] == []
    assert len(client.get("/bots", params={"status": "requested"}).json()["items"]) == 6
    bad = client.get("/bots", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["detail"]["code"] == "invalid_status"
    for bot_id in ids:
        client.post(f"/bots/{bot_id}/stop")
