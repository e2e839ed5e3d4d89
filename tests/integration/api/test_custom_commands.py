"""Custom commands end to end (issue 18, item 3): POST /bots/{id}/commands reaches the bot's
`on_command` through the stored, published, acknowledged path, and its answer comes back as the
command's `result`. Real bot processes (and one real container), real manager, Redis, database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from botfleet.cli.main import app as cli_app
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_command,
    wait_for_status,
)

ANSWERS = "tests.bots.answers:AnswersBot"
MANAGER_ENV = {
    **SPY_RUNTIME_ENV,  # a test may act as a bot (its token); PYTHONPATH finds tests.bots too
    "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.answers"]',
}
DONE = {"acked", "failed", "expired"}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("commands")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def live_bot(client: httpx.Client, bot: str = "demo", **config: Any) -> dict[str, Any]:
    response = client.post("/bots", json={"bot": bot, "config": config})
    assert response.status_code == 201, response.text
    return wait_for_status(client, response.json()["id"], {"active"})


def send(client: httpx.Client, bot_id: str, action: str, payload: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"action": action}
    if payload is not None:
        body["payload"] = payload
    return client.post(f"/bots/{bot_id}/commands", json=body)


def answered(client: httpx.Client, bot_id: str, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return wait_for_command(client, bot_id, response.json()["id"], DONE)


def commands_of(client: httpx.Client, bot_id: str) -> list[dict[str, Any]]:
    return client.get(f"/bots/{bot_id}/commands").json()["items"]


def test_echo_answers_with_the_payload(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_bot(client)
    payload = {"text": "hello", "n": [1, 2, {"deep": True}]}
    response = send(client, bot["id"], "echo", payload)
    assert response.status_code == 202, response.text
    command = response.json()
    assert command["action"] == "echo" and command["payload"] == payload
    assert command["status"] in ("pending", "delivered") and command["result"] is None

    done = wait_for_command(client, bot["id"], command["id"], DONE)
    assert done["status"] == "acked", done
    assert done["result"] == payload and done["error"] is None
    assert done["actor"] and done["actor"].startswith("key:")
    listed = commands_of(client, bot["id"])
    assert [(c["id"], c["result"]) for c in listed] == [(command["id"], payload)]


def test_a_slow_command_holds_up_neither_other_commands_nor_a_stop(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_bot(client)
    slow = send(client, bot["id"], "sleep", {"s": 3})
    assert slow.status_code == 202, slow.text
    began = time.monotonic()
    quick = answered(client, bot["id"], send(client, bot["id"], "echo", {"k": 1}))
    assert quick["status"] == "acked" and quick["result"] == {"k": 1}
    assert time.monotonic() - began < 2.5, "echo waited for the sleep before it"
    slept = wait_for_command(client, bot["id"], slow.json()["id"], DONE)
    assert slept["status"] == "acked" and slept["result"] == {"slept_s": 3.0}, slept

    # A leave while a long command runs: the bot leaves at once, not after the sleep.
    long = send(client, bot["id"], "sleep", {"s": 600})
    assert long.status_code == 202
    wait_for_command(client, bot["id"], long.json()["id"], {"delivered"})
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    done = wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=20)
    assert done["status"] == "completed" and done["exit_code"] == 0


def test_unknown_action_and_the_bots_exception_fail_the_command(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_bot(client)
    unknown = answered(client, bot["id"], send(client, bot["id"], "dance", {"style": "waltz"}))
    assert unknown["status"] == "failed" and unknown["error"] == "unknown_action", unknown
    assert unknown["result"] is None

    raised = answered(client, bot["id"], send(client, bot["id"], "sleep", {"s": -1}))
    assert raised["status"] == "failed", raised
    assert raised["error"] == "sleep: `s` must be between 0 and 3600 seconds"
    # The bot is still fine after both.
    assert client.get(f"/bots/{bot['id']}").json()["status"] == "active"
    echo = answered(client, bot["id"], send(client, bot["id"], "echo", {}))
    assert echo["status"] == "acked" and echo["result"] == {}


def test_a_result_over_64_kib_fails_clearly_and_one_under_is_kept(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_bot(client, ANSWERS)
    fits = answered(client, bot["id"], send(client, bot["id"], "big", {"bytes": 60_000}))
    assert fits["status"] == "acked" and len(fits["result"]["blob"]) == 60_000
    large = answered(client, bot["id"], send(client, bot["id"], "big", {"bytes": 70_000}))
    assert large["status"] == "failed" and large["result"] is None
    assert large["error"].startswith("result_too_large:"), large["error"]
    odd = answered(client, bot["id"], send(client, bot["id"], "not_json"))
    assert odd["status"] == "failed" and odd["error"].startswith("result_not_json:")


def test_the_manager_refuses_a_large_result_from_any_runtime(manager: Manager) -> None:
    """The limit holds even for a runtime that does not check it: the ack is refused as a
    result, the command fails with `result_too_large`. The test acts as the bot (its token)."""
    _, client = manager.new_user()
    bot = live_bot(client, ANSWERS)
    # A command the bot answers only in ten minutes; the test answers first, with its token.
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    command = send(client, bot["id"], "wait").json()
    ack = httpx.post(
        f"{manager.callback_url}/internal/bots/{bot['id']}/commands/{command['id']}/ack",
        json={"ok": True, "result": {"blob": "y" * 70_000}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert ack.status_code == 200, ack.text
    stored = client.get(f"/bots/{bot['id']}/commands/{command['id']}").json()
    assert stored["status"] == "failed" and stored["error"].startswith("result_too_large:")
    assert stored["result"] is None


def test_bad_input_is_refused_and_changes_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_bot(client)
    cases = [
        ({"action": "leave"}, 422),  # the manager's own actions have their own routes
        ({"action": "reconfigure", "payload": {}}, 422),
        ({"action": "secrets"}, 422),
        ({"action": "Bad-Name"}, 422),
        ({"action": "x" * 33}, 422),
        ({"action": "echo", "payload": [1, 2]}, 422),
        ({"action": "echo", "payload": {"blob": "z" * 70_000}}, 422),
        ({"action": "echo", "extra": 1}, 422),
        ({}, 422),
    ]
    for body, code in cases:
        response = client.post(f"/bots/{bot['id']}/commands", json=body)
        assert response.status_code == code, (body, response.text)
        assert response.json()["detail"]["code"], response.text
    assert commands_of(client, bot["id"]) == []

    # Another user's bot: 404, nothing stored.
    _, stranger = manager.new_user()
    foreign = send(stranger, bot["id"], "echo", {"x": 1})
    assert foreign.status_code == 404, foreign.text
    assert commands_of(client, bot["id"]) == []

    # An ended bot: 409, nothing stored.
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})
    before = commands_of(client, bot["id"])
    ended = send(client, bot["id"], "echo", {"x": 1})
    assert ended.status_code == 409, ended.text
    assert ended.json()["detail"]["code"] == "illegal_transition"
    assert commands_of(client, bot["id"]) == before


def test_a_command_sent_while_redis_misses_it_is_read_on_connect(manager: Manager) -> None:
    """Sent while the bot is still `starting` (not yet subscribed): it is stored and the
    runtime reads it with the pending commands when it connects."""
    _, client = manager.new_user()
    created = client.post("/bots", json={"bot": "demo", "config": {"start_delay_s": 2}}).json()
    wait_for_status(client, created["id"], {"starting"})
    early = send(client, created["id"], "echo", {"early": True})
    assert early.status_code == 202, early.text
    done = wait_for_command(client, created["id"], early.json()["id"], DONE)
    assert done["status"] == "acked" and done["result"] == {"early": True}


def test_cli_cmd_waits_and_prints_the_result(manager: Manager, tmp_path: Path) -> None:
    user, client = manager.new_user()
    bot = live_bot(client)
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": user["api_key"],
        "BOTFLEET_ADMIN_TOKEN": None,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
    }
    runner = CliRunner()
    args = ["bots", "cmd", bot["id"], "echo", "n=3", "word=hi", "--wait"]
    result = runner.invoke(cli_app, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"n": 3, "word": "hi"}

    failed = runner.invoke(cli_app, ["bots", "cmd", bot["id"], "dance", "--wait"], env=env)
    assert failed.exit_code != 0 and "unknown_action" in failed.output, failed.output


@pytest.fixture(scope="module")
def docker_manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, docker_engine: None
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("commands-docker")
    with running_manager(root, redis_server.url, backend="docker") as instance:
        yield instance


def test_docker_bot_answers_custom_commands(docker_manager: Manager) -> None:
    _, client = docker_manager.new_user()
    bot = live_bot(client)
    echo = answered(client, bot["id"], send(client, bot["id"], "echo", {"in": "a container"}))
    assert echo["status"] == "acked" and echo["result"] == {"in": "a container"}, echo
    unknown = answered(client, bot["id"], send(client, bot["id"], "dance"))
    assert unknown["status"] == "failed" and unknown["error"] == "unknown_action"
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"
