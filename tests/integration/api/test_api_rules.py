"""The rules of the public API: auth, ownership, limits, illegal moves and bad input."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    transitions,
    wait_for_command,
    wait_for_status,
    wait_until,
)

LATER = "2099-01-01T00:00:00Z"  # a scheduled start keeps a bot `requested`, with no process


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """A manager whose bots keep a copy of what they received, so a test can use a bot's token.
    Its requests wait up to 60 s for a database place (default 5 s): on a loaded machine the
    burst test's 200 POSTs may take longer than 5 s to drain, and what that test guards is that
    none fails for starvation (a 500 at the pool's 10 s timeout), not the machine's speed."""
    root = tmp_path_factory.mktemp("manager")
    env = {**SPY_RUNTIME_ENV, "BOTFLEET_ADMISSION_WAIT_S": "60"}
    with running_manager(root, redis_server.url, extra_env=env) as instance:
        yield instance


def bot_token(runtime_ref: str) -> str:
    """A running bot's own token, as the bot received it (through its secret pipe)."""
    return runtime_env(runtime_ref)["BOTFLEET_BOT_TOKEN"]


def test_no_or_bad_key_is_401(manager: Manager) -> None:
    assert httpx.get(f"{manager.url}/bots").status_code == 401
    response = httpx.get(f"{manager.url}/bots", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "invalid_token"
    admin = httpx.get(f"{manager.url}/admin/users", headers={"Authorization": "Bearer nope"})
    assert admin.status_code == 401


def test_foreign_bot_is_404(manager: Manager) -> None:
    _, alice = manager.new_user()
    _, bob = manager.new_user()
    bot = alice.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER}).json()
    for method, path in [
        ("GET", f"/bots/{bot['id']}"),
        ("GET", f"/bots/{bot['id']}/transitions"),
        ("GET", f"/bots/{bot['id']}/commands"),
        ("GET", f"/bots/{bot['id']}/logs"),
        ("POST", f"/bots/{bot['id']}/stop"),
    ]:
        response = bob.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"]["code"] == "bot_not_found"
    assert bob.patch(f"/bots/{bot['id']}/config", json={"config": {}}).status_code == 404
    assert bob.put(f"/bots/{bot['id']}/config", json={"config": {}}).status_code == 404
    assert bob.get("/bots").json()["items"] == []
    assert alice.get(f"/bots/{bot['id']}").json()["status"] == "requested", "bob changed nothing"
    alice.post(f"/bots/{bot['id']}/stop")


def test_concurrency_limit_holds_under_parallel_posts(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=3)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=60) as c:
            response = c.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
        with lock:
            results.append(response)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 3 + [429] * 17, codes
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["detail"]["code"] == "concurrency_limit"
    assert len(client.get("/bots").json()["items"]) == 3
    for bot in client.get("/bots").json()["items"]:
        client.post(f"/bots/{bot['id']}/stop")
    # Ended bots no longer count.
    assert (
        client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER}).status_code
        == 201
    )


def test_a_burst_larger_than_the_pool_is_answered_in_full(manager: Manager) -> None:
    """200 POSTs at once, five times the worker threads and the pooled connections: every one is
    answered 201. Without admission, threads waiting for a connection starved the requests
    holding one, and the pool's timeout failed the burst with 500s."""
    _, client = manager.new_user(max_bots=250)
    body = {"bot": "demo", "config": {}, "start_at": LATER}

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=manager.url, headers=client.headers, limits=limits, timeout=120
        ) as c:
            answers = await asyncio.gather(*(c.post("/bots", json=body) for _ in range(200)))
        return [answer.status_code for answer in answers]

    codes = asyncio.run(burst())
    assert codes == [201] * 200, sorted(set(codes))
    assert len(client.get("/bots", params={"limit": 500}).json()["items"]) == 200


def test_limit_zero_means_no_bots(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=0)
    response = client.post("/bots", json={"bot": "demo", "config": {}})
    assert response.status_code == 429
    assert response.json()["detail"]["code"] == "concurrency_limit"


def test_admin_changes_a_limit_and_issues_keys(manager: Manager) -> None:
    user, client = manager.new_user(max_bots=0)
    with manager.admin() as admin:
        patched = admin.patch(f"/admin/users/{user['id']}", json={"max_concurrent_bots": 1})
        assert patched.status_code == 200 and patched.json()["max_concurrent_bots"] == 1
        key = admin.post(f"/admin/users/{user['id']}/keys").json()["api_key"]
        assert any(u["id"] == user["id"] for u in admin.get("/admin/users").json()["items"])
        assert "api_key" not in admin.get(f"/admin/users/{user['id']}").json()
        assert admin.post("/admin/users", json={"name": user["name"]}).status_code == 409
    second = httpx.Client(base_url=manager.url, headers={"Authorization": f"Bearer {key}"})
    bot = second.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert bot.status_code == 201
    assert client.get(f"/bots/{bot.json()['id']}").status_code == 200, "same user, other key"
    client.post(f"/bots/{bot.json()['id']}/stop")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"config": {}}, "bot"),
        ({"bot": "demo"}, "config"),  # the contract requires `config`
        ({"bot": "demo", "config": None}, "config"),
        ({"bot": "demo", "config": "not an object"}, "config"),
        ({"bot": "../../etc/passwd", "config": {}}, "bot"),
        ({"bot": "demo", "config": {}, "labels": {"bad key!": "x"}}, "labels"),
        ({"bot": "demo", "config": {}, "secrets": {"token": 5}}, "secrets"),
        ({"bot": "demo", "config": {}, "max_duration_s": -1}, "max_duration_s"),
        ({"bot": "demo", "config": {}, "restart": {"max_retries": -1}}, "restart"),
        ({"bot": "demo", "config": {}, "start_at": "tomorrow"}, "start_at"),
        ({"bot": "demo", "config": {}, "unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_bodies_are_422_with_a_code(manager: Manager, body: dict, where: str) -> None:
    _, client = manager.new_user()
    response = client.post("/bots", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "invalid_input"
    assert where in detail["message"], detail
    assert client.get("/bots").json()["items"] == [], "nothing was created"


def test_user_names_are_the_ascii_the_schema_publishes(manager: Manager) -> None:
    """The OpenAPI pattern is ASCII (JSON Schema's `\\w`); the server must refuse what it refuses
    (schemathesis found `rµ` accepted)."""
    with manager.admin() as admin:
        for name in ("rµ", "ünïcode", "a b"):
            answer = admin.post("/admin/users", json={"name": name})
            assert answer.status_code == 422, (name, answer.text)
            assert answer.json()["detail"]["code"] == "invalid_input"
        assert admin.post("/admin/users", json={"name": "ops.team@acme-1"}).status_code == 201


def test_malformed_json_and_oversized_bodies(manager: Manager) -> None:
    _, client = manager.new_user()
    broken = client.post(
        "/bots", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["detail"]["code"] == "invalid_json"
    huge = client.post("/bots", json={"bot": "demo", "config": {"blob": "x" * 2_000_000}})
    assert huge.status_code == 413 and huge.json()["detail"]["code"] == "body_too_large"
    assert client.get("/bots").json()["items"] == []


def test_illegal_moves_are_409_and_change_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    waiting = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER}).json()
    for method in ("PATCH", "PUT"):
        path = f"/bots/{waiting['id']}/config"
        response = client.request(method, path, json={"config": {"a": 1}})
        assert response.status_code == 409, (method, response.text)
        assert response.json()["detail"]["code"] == "illegal_transition"
        assert "not been launched yet (requested)" in response.json()["detail"]["message"]
    assert client.get(f"/bots/{waiting['id']}/commands").json()["items"] == []
    client.post(f"/bots/{waiting['id']}/stop")

    bot = client.post("/bots", json={"bot": "demo", "config": {"ignore_leave": True}}).json()
    active = wait_for_status(client, bot["id"], {"active"})
    token = bot_token(active["runtime_ref"])
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"stopping"})
    before = transitions(client, bot["id"])
    late = httpx.post(
        f"{manager.callback_url}/internal/bots/{bot['id']}/callbacks",
        json={"event": "started"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert late.status_code == 409, late.text
    assert late.json()["detail"]["code"] == "illegal_transition"
    assert client.get(f"/bots/{bot['id']}").json()["status"] == "stopping", "never backwards"
    assert transitions(client, bot["id"]) == before
    # The bot ignores `leave`: it is killed after the stop grace and recorded as completed.
    done = wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["status_reason"] == "killed_after_grace"
    assert transitions(client, bot["id"])[-1][3] == "reconciler"
    for method in ("PATCH", "PUT"):
        ended = client.request(method, f"/bots/{bot['id']}/config", json={"config": {"a": 1}})
        assert ended.status_code == 409, (method, ended.text)
        detail = ended.json()["detail"]
        assert detail["code"] == "illegal_transition" and detail["status"] == "completed"
        assert detail["message"] == (
            f"bot {bot['id']} has ended (completed); it can no longer be reconfigured"
        )
    assert [c["action"] for c in client.get(f"/bots/{bot['id']}/commands").json()["items"]] == [
        "leave"
    ]


def test_a_bots_token_works_on_its_own_paths_only(manager: Manager) -> None:
    _, client = manager.new_user()
    first = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    second = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    active = wait_for_status(client, first["id"], {"active"})
    wait_for_status(client, second["id"], {"active"})
    token = {"Authorization": f"Bearer {bot_token(active['runtime_ref'])}"}
    base = f"{manager.callback_url}/internal/bots"

    own = httpx.post(f"{base}/{first['id']}/callbacks", json={"event": "heartbeat"}, headers=token)
    assert own.status_code == 200
    for request in [
        ("POST", f"{base}/{second['id']}/callbacks", {"event": "exited", "exit_code": 1}),
        ("GET", f"{base}/{second['id']}/commands?pending=1", None),
        ("POST", f"{base}/{second['id']}/commands/x/ack", {"ok": True}),
    ]:
        response = httpx.request(request[0], request[1], json=request[2], headers=token)
        assert response.status_code == 403, response.text
        assert response.json()["detail"]["code"] == "foreign_bot"
    assert client.get(f"/bots/{second['id']}").json()["status"] == "active", "nothing changed"
    api_key = {"Authorization": client.headers["Authorization"]}
    as_user = httpx.post(
        f"{base}/{first['id']}/callbacks", json={"event": "heartbeat"}, headers=api_key
    )
    assert as_user.status_code == 401, "an API key is not a bot token"

    for bot in (first, second):
        client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, first["id"], {"completed"})
    dead = httpx.post(f"{base}/{first['id']}/callbacks", json={"event": "heartbeat"}, headers=token)
    assert dead.status_code == 401, "a bot's token dies with the bot"


def test_health_readiness_and_metrics(manager: Manager) -> None:
    assert httpx.get(f"{manager.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{manager.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "redis", "orchestrator"}
    # This module's earlier tests ran bots through their lives on this manager.
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(client, bot["id"], {"active"})
    command = client.patch(f"/bots/{bot['id']}/config", json={"config": {"m": 1}}).json()
    wait_for_command(client, bot["id"], command["id"], {"acked"})
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed"})

    def sample(name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in httpx.get(f"{manager.url}/metrics").text.splitlines():
            if line.startswith(f"{name}{{{wanted}}} ") or (
                not labels and line.startswith(name + " ")
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    assert (
        sample("botfleet_transitions_total", reason="started", source="runtime", to="active") >= 1
    )
    assert sample("botfleet_launch_seconds_count", orchestrator="process") >= 1
    assert (
        sample("botfleet_command_round_trip_seconds_count", action="reconfigure", outcome="acked")
        >= 1
    )
    wait_until(
        lambda: sample("botfleet_bots", backend="process", status="completed") >= 1,
        timeout=10,
        what="the bots gauge",
    )
    assert sample("botfleet_reconciler_leader") == 1
