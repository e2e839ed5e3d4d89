"""Rate limits (issue 15 item 6): per API key, per bot for commands, shared by replicas, and
never in the way of bots' callbacks or of a Redis outage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from botfleet.manager.core.secrets import digest
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    second_replica,
    wait_until,
)

BURST = 10
LIMITS = {  # refills slowly enough that BURST + 1 requests on a busy machine stay "rapid"
    "BOTFLEET_RATE_LIMIT_PER_S": "0.2",
    "BOTFLEET_RATE_LIMIT_BURST": str(BURST),
    "BOTFLEET_BOT_COMMAND_RATE_PER_S": "0.05",
    "BOTFLEET_BOT_COMMAND_RATE_BURST": "2",
}
DEMO = {"bot": "demo", "config": {}}


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """A manager with low limits, whose bots keep a copy of their token (tests act as them)."""
    root = tmp_path_factory.mktemp("limited")
    with running_manager(root, redis_server.url, extra_env={**SPY_RUNTIME_ENV, **LIMITS}) as m:
        yield m


def another_key(manager: Manager, user: dict[str, Any]) -> httpx.Client:
    """A second key of the same user: a budget of its own."""
    with manager.admin() as admin:
        response = admin.post(f"/admin/users/{user['id']}/keys")
        assert response.status_code == 201, response.text
    return httpx.Client(
        base_url=manager.url,
        headers={"Authorization": f"Bearer {response.json()['api_key']}"},
        timeout=30,
    )


def wait_active(client: httpx.Client, bot_id: str) -> dict[str, Any]:
    """Poll gently: the watching key has a budget too."""
    return wait_until(
        lambda: (b := client.get(f"/bots/{bot_id}").json()).get("status") == "active" and b,
        timeout=45,
        interval=0.5,
        what=f"bot {bot_id} active",
    )


def drain(client: httpx.Client, path: str = "/bots") -> list[httpx.Response]:
    """BURST + 1 rapid requests from one key."""
    return [client.get(path) for _ in range(BURST + 1)]


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["detail"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


def test_burst_then_429_for_that_key_only(limited: Manager, redis_server: RedisServer) -> None:
    alice, alice_client = limited.new_user()
    _, bob_client = limited.new_user()
    answers = drain(alice_client)
    assert [r.status_code for r in answers[:BURST]] == [200] * BURST
    assert_rate_limited(answers[-1])
    # Another user's key is unaffected, and so is the admin.
    assert [bob_client.get("/bots").status_code for _ in range(BURST)] == [200] * BURST
    with limited.admin() as admin:
        assert {admin.get("/admin/users").status_code for _ in range(BURST * 2)} == {200}
    # The bucket's key names a digest prefix of the API key, never the key.
    keys = [k.decode() for k in redis.Redis.from_url(redis_server.url).keys("botfleet:rl:*")]
    token = alice["api_key"]
    assert not any(token in k for k in keys)
    assert f"botfleet:rl:key:{digest(token)[:16]}" in keys
    # The budget refills: after Retry-After the key works again.
    wait_until(lambda: alice_client.get("/bots").status_code == 200, timeout=10, interval=1)


def test_bots_callbacks_work_while_their_user_is_limited(limited: Manager) -> None:
    user, client = limited.new_user()
    watcher = another_key(limited, user)
    bot = client.post("/bots", json=DEMO).json()
    ref = wait_active(watcher, bot["id"])["runtime_ref"]
    token = runtime_env(ref)["BOTFLEET_BOT_TOKEN"]
    assert_rate_limited(drain(client)[-1])
    callback = f"{limited.callback_url}/internal/bots/{bot['id']}/callbacks"
    auth = {"Authorization": f"Bearer {token}"}
    answers = [httpx.post(callback, json={"event": "heartbeat"}, headers=auth) for _ in range(20)]
    assert {r.status_code for r in answers} == {200}, answers[-1].text
    assert_rate_limited(client.get("/bots"))  # the user is still limited meanwhile


def test_config_changes_are_limited_per_bot(limited: Manager) -> None:
    user, client = limited.new_user(max_bots=5)
    watcher = another_key(limited, user)
    first, second = (client.post("/bots", json=DEMO).json() for _ in range(2))
    for bot in (first, second):
        wait_active(watcher, bot["id"])
    patcher = another_key(limited, user)  # a full key budget: only the bot's budget runs out
    statuses = [
        patcher.patch(f"/bots/{first['id']}/config", json={"config": {"n": n}}) for n in range(3)
    ]
    assert [r.status_code for r in statuses[:2]] == [202, 202]
    assert_rate_limited(statuses[2])
    assert "this bot" in statuses[2].json()["detail"]["message"]
    # The refused change was not sent: two commands, not three.
    commands = another_key(limited, user).get(f"/bots/{first['id']}/commands").json()
    items = commands["items"] if isinstance(commands, dict) else commands  # a page, or a list
    assert len([c for c in items if c["action"] == "reconfigure"]) == 2
    # The other bot has a budget of its own.
    other = patcher.patch(f"/bots/{second['id']}/config", json={"config": {"n": 1}})
    assert other.status_code == 202, other.text


@pytest.fixture
def two_limited_replicas(
    tmp_path: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[Manager, Manager]]:
    with (
        running_manager(tmp_path, redis_server.url, extra_env=LIMITS) as first,
        second_replica(first, extra_env=LIMITS) as second,
    ):
        yield first, second


def test_replicas_share_one_budget(two_limited_replicas: tuple[Manager, Manager]) -> None:
    first, second = two_limited_replicas
    user, _ = first.new_user()
    auth = {"Authorization": f"Bearer {user['api_key']}"}
    answers = [
        httpx.get(f"{(first, second)[n % 2].url}/bots", headers=auth) for n in range(BURST + 1)
    ]
    assert [r.status_code for r in answers[:BURST]] == [200] * BURST
    assert_rate_limited(answers[-1])  # each replica alone served at most BURST / 2 + 1
    assert_rate_limited(httpx.get(f"{first.url}/bots", headers=auth))


def test_redis_down_fails_open(tmp_path: pytest.TempPathFactory) -> None:
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    try:
        with running_manager(tmp_path, own_redis.url, extra_env=LIMITS) as manager:
            _, client = manager.new_user()
            own_redis.stop()
            answers = [client.get("/bots") for _ in range(BURST * 3)]
            assert {r.status_code for r in answers} == {200}, answers[-1].text
            metrics = httpx.get(f"{manager.url}/metrics").text
            line = next(
                m for m in metrics.splitlines() if m.startswith("botfleet_rate_limit_failed_open")
            )
            assert float(line.split()[-1]) >= BURST * 3
            assert "failing open" in manager.log_path.read_text()
    finally:
        own_redis.stop()
