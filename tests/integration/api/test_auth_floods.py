"""Floods a bot can send the manager (issue 27, item 7).

- Random bearer tokens at a high rate: each was one database read and never a 429 (every token
  had a fresh rate-limit bucket). Failed authentications now have a budget per client address;
  past it, a token the manager does not already know is answered 429 before any read, while a
  valid key in use from the same address keeps working.
- A bot filling Redis' client slots turned the rate limits off for everyone (the limiter opened
  its connections on demand and failed open when Redis refused one). Its connections are now
  opened at start and kept.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import ADMIN_TOKEN, Manager, RedisServer, running_manager, wait_until

FAILURE_BURST = 20
FAILURE_RATE_PER_S = 0.5
FLOOD = 500


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("auth-floods")
    env = {
        "BOTFLEET_AUTH_FAILURE_BURST": str(FAILURE_BURST),
        "BOTFLEET_AUTH_FAILURE_RATE_PER_S": str(FAILURE_RATE_PER_S),
    }
    with running_manager(root, redis_server.url, extra_env=env) as instance:
        yield instance


def metric(manager: Manager, name: str, labels: str = "") -> float:
    """A counter's value on /metrics (0 when it was never counted)."""
    text = httpx.get(f"{manager.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def client_from(manager: Manager, address: str, token: str | None = None) -> httpx.Client:
    """A client whose requests come from `address` (any 127.x.y.z is this host): each test
    floods from an address of its own, so one test's spent budget is not another's."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=manager.url,
        headers=headers,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )


def database_reads_for_keys(manager: Manager) -> float:
    """Credential cache misses: each is one database read of an API key (or bot token)."""
    return metric(manager, "botfleet_credential_cache_lookups_total", '{result="miss"}')


def test_random_tokens_are_refused_before_the_database(guarded: Manager) -> None:
    user, _ = guarded.new_user()
    valid = client_from(guarded, "127.0.0.2", user["api_key"])
    assert valid.get("/bots").status_code == 200  # known from now on
    reads_before = database_reads_for_keys(guarded)
    statuses: list[int] = []
    refusals: list[httpx.Response] = []
    valid_answers: list[int] = []
    started = time.monotonic()
    with client_from(guarded, "127.0.0.2") as attacker:
        for n in range(FLOOD):
            answer = attacker.get(
                "/bots", headers={"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                refusals.append(answer)
            if n % 25 == 0:  # the valid key, in between, from the same address
                valid_answers.append(valid.get("/bots").status_code)
    elapsed = time.monotonic() - started
    reads = database_reads_for_keys(guarded) - reads_before

    assert set(statuses) <= {401, 429}, statuses
    assert statuses[:FAILURE_BURST] == [401] * FAILURE_BURST
    # +2: a token the bucket refilled at either edge of the test's own clock window.
    refilled = FAILURE_BURST + FAILURE_RATE_PER_S * elapsed + 2
    assert statuses.count(401) <= refilled, (statuses.count(401), elapsed)
    assert statuses.count(429) >= FLOOD - refilled
    for refusal in refusals[:5]:
        assert refusal.json()["detail"]["code"] == "too_many_auth_failures"
        assert int(refusal.headers["Retry-After"]) >= 1
    # The database was read for the 401s only (the valid key is cached: no read).
    assert reads == statuses.count(401), (reads, statuses.count(401))
    assert valid_answers == [200] * len(valid_answers)


def test_a_known_key_from_the_same_address_is_untouched(guarded: Manager) -> None:
    """During a block, only unknown tokens are refused: the admin and cached keys are not."""
    user, _ = guarded.new_user()
    valid = client_from(guarded, "127.0.0.3", user["api_key"])
    assert valid.get("/bots").status_code == 200
    with client_from(guarded, "127.0.0.3") as attacker:
        wait_until(
            lambda: (
                attacker.get("/bots", headers={"Authorization": "Bearer wrong"}).status_code == 429
            ),
            timeout=30,
            interval=0,
            what="the address' failure budget to be spent",
        )
    assert {valid.get("/bots").status_code for _ in range(10)} == {200}
    with client_from(guarded, "127.0.0.3", ADMIN_TOKEN) as admin:
        assert admin.get("/admin/users").status_code == 200
    # Another address has its own budget.
    assert client_from(guarded, "127.0.0.4", "wrong").get("/bots").status_code == 401


def test_a_forged_forwarded_address_buys_no_new_budget(guarded: Manager) -> None:
    """uvicorn believes X-Forwarded-For from loopback unless told otherwise: a bot on this host
    could claim a fresh address per request and never spend its budget."""
    with client_from(guarded, "127.0.0.1") as attacker:  # the address uvicorn trusts by default
        statuses = [
            attacker.get(
                "/bots",
                headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"10.9.{n}.1"},
            ).status_code
            for n in range(FAILURE_BURST + 10)
        ]
    assert statuses[:FAILURE_BURST] == [401] * FAILURE_BURST, statuses
    assert 429 in statuses[FAILURE_BURST:], statuses


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: it is filled to its client limit."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def fill_client_slots(url: str) -> list[redis.Redis]:
    """Lower maxclients to a little above what is connected, then take every slot left."""
    admin = redis.Redis.from_url(url)
    connected = int(admin.info("clients")["connected_clients"])
    admin.config_set("maxclients", connected + 5)
    taken = [admin]
    for _ in range(50):  # 5 slots: bounded
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            assert "max number of clients" in str(exc), exc
            client.close()
            return taken
        taken.append(client)
    raise AssertionError("Redis never said it was full")


def test_rate_limits_hold_while_redis_has_no_client_slot_left(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    burst = 10
    env = {"BOTFLEET_RATE_LIMIT_PER_S": "0.2", "BOTFLEET_RATE_LIMIT_BURST": str(burst)}
    with running_manager(tmp_path / "m", own_redis.url, extra_env=env) as manager:
        _, client = manager.new_user()
        failed_open = metric(manager, "botfleet_rate_limit_failed_open_total")
        hogs = fill_client_slots(own_redis.url)
        try:
            answers = [client.get("/bots").status_code for _ in range(burst + 5)]
            assert answers[:burst] == [200] * burst, answers
            assert answers[burst:] == [429] * 5, answers
            assert metric(manager, "botfleet_rate_limit_failed_open_total") == failed_open
        finally:
            for hog in hogs:
                hog.close()
