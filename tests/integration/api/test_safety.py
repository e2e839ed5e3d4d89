"""Safety of the API and the bots: idempotency, dedup keys, sealed secrets, allow-listed code,
and input limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import (
    Manager,
    RedisServer,
    database_kind,
    running_manager,
    wait_for_command,
    wait_for_status,
)

LATER = "2099-01-01T00:00:00Z"
DEEP: object = 1
for _ in range(20):
    DEEP = [DEEP]


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("safety")
    env = {"BOTFLEET_ALLOWED_BOT_MODULES": '["botfleet.runtime.bots"]'}
    with running_manager(root, redis_server.url, extra_env=env) as instance:
        yield instance


def test_idempotency_key_replays_the_first_answer(manager: Manager) -> None:
    _, client = manager.new_user()
    body = {"bot": "demo", "config": {}, "start_at": LATER, "name": "once"}
    first = client.post("/bots", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/bots", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/bots").json()["items"]) == 1

    other = client.post("/bots", json={**body, "name": "other"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and other.json()["detail"]["code"] == "idempotency_mismatch"
    assert len(client.get("/bots").json()["items"]) == 1, "nothing created by a mismatch"


def test_idempotency_holds_under_parallel_retries(manager: Manager) -> None:
    _, client = manager.new_user()
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=30) as c:
            answers.append(
                c.post(
                    "/bots",
                    json={"bot": "demo", "config": {}, "start_at": LATER},
                    headers={"Idempotency-Key": "same"},
                )
            )

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(client.get("/bots").json()["items"]) == 1, "one bot, whatever the timing"
    created = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(created) == 1
    assert all(
        a.status_code == 201 or a.json()["detail"]["code"] == "idempotency_in_progress"
        for a in answers
    )


def test_idempotent_reconfigure(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(client, bot["id"], {"active"})
    path, key = f"/bots/{bot['id']}/config", {"Idempotency-Key": "cfg-1"}
    first = client.patch(path, json={"config": {"v": 1}}, headers=key)
    again = client.patch(path, json={"config": {"v": 1}}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert len(client.get(f"/bots/{bot['id']}/commands").json()["items"]) == 1
    mismatch = client.patch(path, json={"config": {"v": 2}}, headers=key)
    assert mismatch.json()["detail"]["code"] == "idempotency_mismatch"
    wait_for_command(client, bot["id"], first.json()["id"], {"acked"})
    client.post(f"/bots/{bot['id']}/stop")


def test_dedup_key_is_unique_among_live_bots(manager: Manager) -> None:
    _, client = manager.new_user()
    body = {"bot": "demo", "config": {}, "start_at": LATER, "dedup_key": "meeting-42"}
    first = client.post("/bots", json=body).json()
    duplicate = client.post("/bots", json=body)
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"] == {
        "code": "duplicate_bot",
        "message": duplicate.json()["detail"]["message"],
        "bot_id": first["id"],
    }
    client.post(f"/bots/{first['id']}/stop")
    assert client.post("/bots", json=body).status_code == 201, "free again once the bot ended"
    _, other_user = manager.new_user()
    assert other_user.post("/bots", json=body).status_code == 201, "keys are per user"


def test_secrets_are_sealed_at_rest_and_reach_only_the_runtime(manager: Manager) -> None:
    _, client = manager.new_user()
    secret = "s3cr3t-value-that-must-not-leak"
    bot = client.post(
        "/bots",
        json={"bot": "demo", "config": {}, "secrets": {"api_key": secret}, "labels": {"k": "v"}},
    ).json()
    active = wait_for_status(client, bot["id"], {"active"})
    command = client.patch(f"/bots/{bot['id']}/config", json={"config": {"x": 1}}).json()
    wait_for_command(client, bot["id"], command["id"], {"acked"})

    for response in (
        client.get(f"/bots/{bot['id']}"),
        client.get("/bots"),
        client.get(f"/bots/{bot['id']}/commands"),
        client.get(f"/bots/{bot['id']}/transitions"),
    ):
        assert secret not in response.text and "secrets" not in response.json()
    pid = active["runtime_ref"].split("-")[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    # The process backend hands them through a pipe (its token too: the bot is active), never
    # the environment, which other processes may read
    # (tests/integration/isolation/test_isolation_process.py).
    assert secret not in environ and "BOTFLEET_SECRET_ENV_FD" in environ
    assert secret not in manager.log_tail(10_000), "never logged"
    for record in (manager.data_dir / "workloads").glob("*.json"):
        assert secret not in record.read_text()
    if database_kind() == "postgresql":
        url = manager.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            sealed = conn.execute(
                "SELECT secrets_sealed FROM bots WHERE id = %s", (bot["id"],)
            ).fetchone()[0]
    else:
        import sqlite3

        with sqlite3.connect(manager.database_url.removeprefix("sqlite:///")) as conn:
            sealed = conn.execute(
                "SELECT secrets_sealed FROM bots WHERE id = ?", (bot["id"],)
            ).fetchone()[0]
    assert sealed and secret not in sealed and sealed.startswith("gAAAAA"), "Fernet token"
    client.post(f"/bots/{bot['id']}/stop")


def test_only_allowed_modules_can_run(manager: Manager) -> None:
    _, client = manager.new_user()
    refused = client.post("/bots", json={"bot": "os:system", "config": {}})
    assert refused.status_code == 422 and refused.json()["detail"]["code"] == "bot_not_allowed"
    unknown = client.post("/bots", json={"bot": "nosuchbot", "config": {}})
    assert unknown.status_code == 422 and unknown.json()["detail"]["code"] == "unknown_bot"
    allowed = client.post("/bots", json={"bot": "botfleet.runtime.bots.demo:DemoBot", "config": {}})
    assert allowed.status_code == 201
    wait_for_status(client, allowed.json()["id"], {"active"})
    client.post(f"/bots/{allowed.json()['id']}/stop")


@pytest.mark.parametrize(
    "body",
    [
        {"bot": "demo", "config": {}, "image": "Not An Image!"},
        {"bot": "demo", "config": {}, "labels": {f"k{i}": "v" for i in range(33)}},
        {"bot": "demo", "config": {}, "labels": {"k": "v" * 301}},
        {"bot": "demo", "config": {}, "name": "n" * 201},
        {"bot": "demo", "config": {"a": DEEP}},
        {"bot": "demo", "config": {}, "secrets": {f"s{i}": "v" for i in range(65)}},
    ],
    ids=["image", "label-count", "label-length", "name", "config-depth", "secret-count"],
)
def test_input_limits(manager: Manager, body: dict) -> None:
    _, client = manager.new_user()
    response = client.post("/bots", json=body)
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_input"


def test_idempotency_survives_a_restart(tmp_path: Path, redis_server: RedisServer) -> None:
    with running_manager(tmp_path, redis_server.url) as manager:
        _, client = manager.new_user()
        body = {"bot": "demo", "config": {}, "start_at": LATER}
        first = client.post("/bots", json=body, headers={"Idempotency-Key": "restart"})
        manager.stop()
        manager.start()
        again = client.post("/bots", json=body, headers={"Idempotency-Key": "restart"})
        assert again.json()["id"] == first.json()["id"]
        assert len(client.get("/bots").json()["items"]) == 1
