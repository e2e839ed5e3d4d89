"""Secrets update end to end (issue 18, item 9): PUT /bots/{id}/secrets replaces a live bot's
secrets, sealed at rest; the bot is sent a `secrets` command that carries none, fetches them
with its own token and gets them in `on_secrets`. The new value never appears on Redis, in the
command list, in events, in logs or in the database in clear. Real bot processes, manager,
Redis and database."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from botfleet.cli.main import app as cli_app
from tests.listeners import Listener
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_command,
    wait_for_status,
    wait_until,
)

ANSWERS = "tests.bots.answers:AnswersBot"
MANAGER_ENV = {
    **SPY_RUNTIME_ENV,  # a test acts as a bot (its token); PYTHONPATH finds tests.bots too
    "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.answers"]',
}
OLD = "old-secret-value-0a1b2c"
NEW = "new-secret-value-9z8y7x"
DONE = {"acked", "failed", "expired"}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("secrets")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def live_answers(client: httpx.Client, secrets: dict[str, str]) -> dict[str, Any]:
    response = client.post("/bots", json={"bot": ANSWERS, "config": {}, "secrets": secrets})
    assert response.status_code == 201, response.text
    return wait_for_status(client, response.json()["id"], {"active"})


def held(client: httpx.Client, bot_id: str, name: str) -> dict[str, Any]:
    """What the bot holds for secret `name`: its SHA-256 (never the value) and its updates."""
    sent = client.post(
        f"/bots/{bot_id}/commands", json={"action": "secret_digest", "payload": {"name": name}}
    )
    assert sent.status_code == 202, sent.text
    done = wait_for_command(client, bot_id, sent.json()["id"], DONE)
    assert done["status"] == "acked", done
    return dict(done["result"])


def sealed_secrets(manager: Manager, bot_id: str) -> str | None:
    engine = sa.create_engine(manager.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT secrets_sealed FROM bots WHERE id = :id"), {"id": bot_id}
            ).scalar_one()
    finally:
        engine.dispose()


class ChannelSpy:
    """Everything published on a bot's command channel, read with the suite's own Redis user."""

    def __init__(self, url: str, bot_id: str) -> None:
        self.messages: list[bytes] = []
        self._pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(f"bot_commands:{bot_id}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:
                self.messages.append(message["data"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


def test_a_live_bot_gets_new_secrets_and_they_never_travel_in_clear(
    manager: Manager, redis_server: RedisServer
) -> None:
    user, client = manager.new_user()
    bot = live_answers(client, {"api_key": OLD})
    assert held(client, bot["id"], "api_key") == {"sha256": sha(OLD), "updates": 0}
    spy = ChannelSpy(redis_server.url, bot["id"])
    listener = Listener(manager.url, user["api_key"], last_event_id=0)
    try:
        answer = client.put(f"/bots/{bot['id']}/secrets", json={"api_key": NEW, "region": "eu"})
        assert answer.status_code == 202, answer.text
        command = answer.json()
        assert command["action"] == "secrets" and command["payload"] is None
        assert NEW not in answer.text
        done = wait_for_command(client, bot["id"], command["id"], DONE)
        assert done["status"] == "acked", done
        assert held(client, bot["id"], "api_key") == {"sha256": sha(NEW), "updates": 1}
        assert held(client, bot["id"], "region")["sha256"] == sha("eu")
        seen = listener.until(
            lambda e: e[1] == "command" and e[2]["command_id"] == command["id"]
            and e[2]["status"] == "acked"
        )  # fmt: skip
        wait_until(
            lambda: any(command["id"].encode() in m for m in spy.messages),
            timeout=10,
            what="the command on the bot's channel",
        )
    finally:
        spy.close()
        listener.close()

    # The command did go over Redis, without the secret.
    assert any(command["id"].encode() in m for m in spy.messages), spy.messages
    assert not any(NEW.encode() in m for m in spy.messages)
    events = list(seen)
    while not listener.events.empty():
        events.append(listener.events.get())
    assert any(e[1] == "command" and e[2]["action"] == "secrets" for e in events)
    assert NEW not in json.dumps(events)
    assert NEW not in client.get(f"/bots/{bot['id']}/commands").text
    assert NEW not in client.get(f"/bots/{bot['id']}").text
    assert NEW not in client.get(f"/bots/{bot['id']}/logs", params={"tail": 1000}).text
    assert NEW not in manager.log_path.read_text()
    sealed = sealed_secrets(manager, bot["id"])
    assert sealed and NEW not in sealed and OLD not in sealed


def test_only_the_bots_own_token_reads_its_secrets(manager: Manager) -> None:
    user, client = manager.new_user()
    bot = live_answers(client, {"api_key": OLD})
    other = live_answers(client, {"api_key": "the-other-bots"})
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    other_token = runtime_env(other["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    url = f"{manager.callback_url}/internal/bots/{bot['id']}/secrets"

    own = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 200 and own.json() == {"api_key": OLD}
    # Attacks: another bot's token, the owner's API key, no token.
    stolen = httpx.get(url, headers={"Authorization": f"Bearer {other_token}"})
    assert stolen.status_code == 403 and OLD not in stolen.text
    as_user = httpx.get(url, headers={"Authorization": f"Bearer {user['api_key']}"})
    assert as_user.status_code == 401 and OLD not in as_user.text
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and OLD not in anonymous.text


def test_bad_input_foreign_and_ended_bots_change_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_answers(client, {"api_key": OLD})
    before = sealed_secrets(manager, bot["id"])
    cases: list[Any] = [
        {"api_key": 1},
        {"nested": {"a": "b"}},
        ["api_key", NEW],
        NEW,
        {f"k{i}": "v" for i in range(65)},  # more than 64 names
        {"big": "x" * 70_000},
    ]
    for body in cases:
        answer = client.put(f"/bots/{bot['id']}/secrets", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"]["code"] and NEW not in answer.text
    _, stranger = manager.new_user()
    foreign = stranger.put(f"/bots/{bot['id']}/secrets", json={"api_key": NEW})
    assert foreign.status_code == 404, foreign.text
    assert client.get(f"/bots/{bot['id']}/commands").json()["items"] == []
    assert sealed_secrets(manager, bot["id"]) == before

    # A refusal by the bot fails the command, with its message.
    refused = client.put(f"/bots/{bot['id']}/secrets", json={"refuse": "1"})
    assert refused.status_code == 202
    done = wait_for_command(client, bot["id"], refused.json()["id"], DONE)
    assert done["status"] == "failed" and "refuses secrets named 'refuse'" in done["error"]

    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})
    stored = sealed_secrets(manager, bot["id"])
    count = len(client.get(f"/bots/{bot['id']}/commands").json()["items"])
    ended = client.put(f"/bots/{bot['id']}/secrets", json={"api_key": NEW})
    assert ended.status_code == 409, ended.text
    assert ended.json()["detail"]["code"] == "illegal_transition"
    assert sealed_secrets(manager, bot["id"]) == stored
    assert len(client.get(f"/bots/{bot['id']}/commands").json()["items"]) == count


def test_cli_replaces_secrets_from_a_file_without_printing_them(
    manager: Manager, tmp_path: Path
) -> None:
    user, client = manager.new_user()
    bot = live_answers(client, {"api_key": OLD})
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"api_key": NEW}))
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": user["api_key"],
        "BOTFLEET_ADMIN_TOKEN": None,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
    }
    args = ["bots", "secrets", bot["id"], "--file", str(secrets_file), "--wait"]
    result = CliRunner().invoke(cli_app, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "acked" in result.output and NEW not in result.output
    assert held(client, bot["id"], "api_key")["sha256"] == sha(NEW)
