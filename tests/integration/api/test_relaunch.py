"""POST /bots/{id}/relaunch: an ended bot starts again as a new bot with everything it had;
refused while live, for another user's bot, over the limit, on a duplicate; idempotent; and
the CLI's `botfleet bots relaunch ID --wait`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from botfleet.cli.main import app
from tests.support import Manager, RedisServer, running_manager, wait_for_command, wait_for_status

MANAGER_ENV = {"BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true"}  # the override points at loopback


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("relaunch")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/bots", json={"bot": "demo", "config": {}, **body})
    assert response.status_code == 201, response.text
    return response.json()


def ended(client: httpx.Client, bot_id: str) -> dict[str, Any]:
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    return wait_for_status(client, bot_id, {"completed", "failed"})


def sealed_secrets(manager: Manager, *bot_ids: str) -> list[str | None]:
    engine = create_engine(manager.database_url)
    try:
        with engine.connect() as conn:
            return [
                conn.execute(
                    text("SELECT secrets_sealed FROM bots WHERE id = :id"), {"id": i}
                ).scalar_one()
                for i in bot_ids
            ]
    finally:
        engine.dispose()


def test_relaunch_copies_the_bot(manager: Manager) -> None:
    _, client = manager.new_user()
    restart = {"max_retries": 2, "backoff_s": 0.5, "on": ["crash", "start_failed"]}
    old = start(
        client,
        name="standup",
        platform="meet",
        native_id="abc-defg-hij",
        config={"lang": "en", "n": 1},
        secrets={"api_key": "s3cret"},
        labels={"team": "a"},
        restart=restart,
        max_duration_s=3600,
        state_key=f"k-{uuid.uuid4().hex[:6]}",
    )
    wait_for_status(client, old["id"], {"active"})
    hook = client.put(f"/bots/{old['id']}/webhook", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code in (200, 201), hook.text
    # The latest config is the one the bot acknowledged, not the one it was started with.
    command = client.patch(f"/bots/{old['id']}/config", json={"config": {"n": 2}}).json()
    assert wait_for_command(client, old["id"], command["id"], {"acked", "failed"})["status"] == (
        "acked"
    )
    ended(client, old["id"])

    response = client.post(f"/bots/{old['id']}/relaunch")
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old["id"] and new["relaunch_of"] == old["id"]
    assert new["status"] in ("requested", "starting") and new["attempt"] == 0
    for field in ("bot", "image", "name", "platform", "native_id", "labels", "state_key"):
        assert new[field] == old[field], field
    assert new["config"] == {"lang": "en", "n": 2} and new["config_version"] == 1
    assert new["restart"] == restart and new["max_duration_s"] == 3600
    assert "secrets" not in new
    # The secrets were copied sealed (never opened to copy), and the new bot can open them.
    copied, original = sealed_secrets(manager, new["id"], old["id"])
    assert copied == original and copied is not None and "s3cret" not in copied
    wait_for_status(client, new["id"], {"active"})
    override = client.get(f"/bots/{new['id']}/webhook")
    assert override.status_code == 200 and override.json()["url"] == "http://127.0.0.1:9/hook"
    # The old bot is untouched.
    assert client.get(f"/bots/{old['id']}").json()["status"] == "completed"
    ended(client, new["id"])
    assert client.delete(f"/bots/{old['id']}").status_code == 204
    assert client.delete(f"/bots/{new['id']}", params={"purge_state": 1}).status_code == 204


def test_relaunch_of_a_live_bot_is_refused(manager: Manager) -> None:
    _, client = manager.new_user()
    live = start(client)
    wait_for_status(client, live["id"], {"active"})
    refused = client.post(f"/bots/{live['id']}/relaunch")
    assert refused.status_code == 409 and refused.json()["detail"]["code"] == "bot_live"
    assert len(client.get("/bots").json()["items"]) == 1  # nothing created
    ended(client, live["id"])


def test_another_users_bot_cannot_be_relaunched(manager: Manager) -> None:
    """The attack: relaunching someone else's ended bot would run it (with its secrets) under
    the attacker's account. It answers 404, as for an unknown bot, and creates nothing."""
    _, alice = manager.new_user()
    _, mallory = manager.new_user()
    victim = start(alice, secrets={"token": "alice-only"})
    ended(alice, victim["id"])
    attack = mallory.post(f"/bots/{victim['id']}/relaunch")
    assert attack.status_code == 404 and attack.json()["detail"]["code"] == "bot_not_found"
    assert mallory.get("/bots").json()["items"] == []
    assert len(alice.get("/bots").json()["items"]) == 1
    # Its owner can (so the refusal above is about ownership).
    assert alice.post(f"/bots/{victim['id']}/relaunch").status_code == 201
    unknown = alice.post(f"/bots/{uuid.uuid4()}/relaunch")
    assert unknown.status_code == 404


def test_limit_and_dedup_apply(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=1)
    old = start(client)
    ended(client, old["id"])
    live = start(client)
    wait_for_status(client, live["id"], {"active"})
    over = client.post(f"/bots/{old['id']}/relaunch")
    assert over.status_code == 429 and over.json()["detail"]["code"] == "concurrency_limit"
    assert len(client.get("/bots").json()["items"]) == 2  # nothing created
    _, roomy = manager.new_user(max_bots=5)
    first = start(roomy, dedup_key="room-2")
    ended(roomy, first["id"])
    holder = start(roomy, dedup_key="room-2")
    duplicate = roomy.post(f"/bots/{first['id']}/relaunch")
    assert duplicate.status_code == 409 and duplicate.json()["detail"]["code"] == "duplicate_bot"
    assert len(roomy.get("/bots").json()["items"]) == 2  # nothing created
    ended(client, live["id"])
    ended(roomy, holder["id"])


def test_relaunch_is_idempotent_with_a_key(manager: Manager) -> None:
    _, client = manager.new_user()
    old = start(client)
    ended(client, old["id"])
    headers = {"Idempotency-Key": f"relaunch-{uuid.uuid4().hex}"}
    first = client.post(f"/bots/{old['id']}/relaunch", headers=headers)
    again = client.post(f"/bots/{old['id']}/relaunch", headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert len(client.get("/bots").json()["items"]) == 2
    ended(client, first.json()["id"])


def test_cli_relaunch_waits_until_active(manager: Manager, tmp_path: Path) -> None:
    user, client = manager.new_user()
    old = start(client, name="cli")
    ended(client, old["id"])
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": user["api_key"],
        "BOTFLEET_ADMIN_TOKEN": None,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
    }
    result = CliRunner().invoke(app, ["bots", "relaunch", old["id"], "--wait"], env=env)
    assert result.exit_code == 0, result.output
    new_id = result.output.split()[0]
    new = client.get(f"/bots/{new_id}").json()
    assert new["status"] == "active" and new["relaunch_of"] == old["id"] and new["name"] == "cli"
    live = CliRunner().invoke(app, ["bots", "relaunch", new_id], env=env)
    assert live.exit_code == 4, live.output  # 409 bot_live
    ended(client, new_id)
    # `bots start` sends the state key and the restart triggers.
    args = ["bots", "start", "demo", "--state-key", "cli-state", "--restart-retries", "1"]
    args += ["--restart-on", "crash", "--restart-on", "start_failed", "--json"]
    started = CliRunner().invoke(app, args, env=env)
    assert started.exit_code == 0, started.output
    bot = json.loads(started.output)
    assert bot["state_key"] == "cli-state"
    assert bot["restart"] == {"max_retries": 1, "backoff_s": 5.0, "on": ["crash", "start_failed"]}
    ended(client, bot["id"])
    assert client.delete(f"/bots/{bot['id']}", params={"purge_state": 1}).status_code == 204
