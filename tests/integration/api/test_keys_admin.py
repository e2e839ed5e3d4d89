"""Issue 18, items 5 and 7: API keys an operator can name, scope, expire and revoke, users it can
disable, and the admin fleet view. Each isolation claim performs the attack and asserts it fails:
a revoked, expired or disabled user's key is refused at once by every replica, a read-only key
cannot change anything, a user cannot reach another user's bots or keys through the admin's
filters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from botfleet.cli.main import app
from botfleet.manager.core.errors import Forbidden, Unauthorized
from botfleet.manager.core.models import ApiKey
from botfleet.manager.hot_path.key_usage import KeyUsage
from botfleet.manager.services import auth, users
from tests.support import (
    ADMIN_TOKEN,
    Manager,
    RedisServer,
    leader_of,
    running_manager,
    wait_for_status,
    wait_until,
)

DEMO = {"bot": "demo", "config": {}}


@pytest.fixture
def two_replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Manager, Manager]]:
    """Two managers on one database and one Redis, each with its credential cache."""
    with running_manager(tmp_path, redis_server.url) as first:
        second = Manager(
            data_dir=first.data_dir, database_url=first.database_url, redis_url=redis_server.url
        )
        second.start()
        try:
            yield first, second
        finally:
            second.release()


def _as(manager: Manager, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=manager.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


def _keys(admin: httpx.Client, user_id: str) -> list[dict[str, Any]]:
    response = admin.get(f"/admin/users/{user_id}/keys")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _bots_of(manager: Manager, user_id: str) -> list[str]:
    with manager.admin() as admin:
        return [b["id"] for b in admin.get("/bots", params={"user_id": user_id}).json()["items"]]


# ---- keys ------------------------------------------------------------------------------------


def test_a_key_is_shown_once_listed_without_its_secret_and_its_use_is_noted(
    manager: Manager,
) -> None:
    user, _ = manager.new_user()
    with manager.admin() as admin:
        made = admin.post(
            f"/admin/users/{user['id']}/keys", json={"name": "ci", "scopes": ["bots:read"]}
        )
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["api_key"].startswith(key["prefix"])
        assert key["scopes"] == ["bots:read"] and key["name"] == "ci"
        listed = admin.get(f"/admin/users/{user['id']}/keys")
        assert key["api_key"] not in listed.text and user["api_key"] not in listed.text
        rows = {k["id"]: k for k in listed.json()["items"]}
        assert len(rows) == 2 and key["id"] in rows
        first = next(k for k in rows.values() if k["id"] != key["id"])
        assert first["scopes"] == ["bots:read", "bots:write"] and first["expires_at"] is None
        assert rows[key["id"]]["last_used_at"] is None
        with _as(manager, key["api_key"]) as client:
            assert client.get("/bots").status_code == 200
        # Written in a batch (manager/hot_path/key_usage.py), not by the request itself.
        wait_until(
            lambda: _keys(admin, user["id"])[-1]["last_used_at"] is not None,
            timeout=20,
            interval=0.5,
            what="last_used_at written",
        )


def test_a_revoked_key_is_refused_by_every_replica_at_once(
    two_replicas: tuple[Manager, Manager],
) -> None:
    first, second = two_replicas
    user, _ = first.new_user()
    with first.admin() as admin:
        key = admin.post(f"/admin/users/{user['id']}/keys", json={}).json()
        with _as(first, key["api_key"]) as on_first, _as(second, key["api_key"]) as on_second:
            # Both replicas have authenticated the key and keep it in memory.
            for client in (on_first, on_second, on_first, on_second):
                assert client.get("/bots").status_code == 200
            revoked = admin.delete(f"/admin/users/{user['id']}/keys/{key['id']}")
            assert revoked.status_code == 204
            done = time.monotonic()
            # Without the invalidation the second replica would answer 200 for the cache TTL.
            wait_until(
                lambda: on_second.get("/bots").status_code == 401,
                timeout=1.0,
                interval=0.05,
                what="the second replica refusing the revoked key",
            )
            assert time.monotonic() - done < 1.0
            assert on_first.get("/bots").status_code == 401
            assert on_second.post("/bots", json=DEMO).status_code == 401
        assert _bots_of(first, user["id"]) == []
        # The user's other key is untouched; the revoked one is no longer listed.
        with _as(second, user["api_key"]) as other:
            assert other.get("/bots").status_code == 200
        assert key["id"] not in {k["id"] for k in _keys(admin, user["id"])}
        assert admin.delete(f"/admin/users/{user['id']}/keys/{key['id']}").status_code == 404


def test_a_disabled_user_is_refused_everywhere_and_its_bots_run_on(
    two_replicas: tuple[Manager, Manager],
) -> None:
    first, second = two_replicas
    user, client = first.new_user()
    bot = client.post("/bots", json=DEMO).json()
    wait_for_status(client, bot["id"], {"active"})
    with _as(second, user["api_key"]) as on_second, first.admin() as admin:
        assert on_second.get(f"/bots/{bot['id']}").status_code == 200  # cached on both
        changed = admin.patch(f"/admin/users/{user['id']}", json={"disabled": True})
        assert changed.status_code == 200 and changed.json()["disabled_at"] is not None
        wait_until(
            lambda: on_second.get("/bots").status_code == 401,
            timeout=1.0,
            interval=0.05,
            what="the second replica refusing the disabled user's key",
        )
        refused = client.post(f"/bots/{bot['id']}/stop")
        assert refused.status_code == 401 and _code(refused) == "user_disabled"
        # A key created for a disabled user is refused too.
        extra = admin.post(f"/admin/users/{user['id']}/keys", json={}).json()["api_key"]
        with _as(first, extra) as fresh:
            assert fresh.get("/bots").status_code == 401
        # Its bots run on (what a reconciler run would do to them, it has done), and the admin
        # may stop them: a clean `completed` needs the bot's own token for its callbacks.
        leader_of(first, second).loop_runs("reconciler")
        assert admin.get(f"/bots/{bot['id']}").json()["status"] == "active"
        assert admin.post(f"/bots/{bot['id']}/stop").status_code == 202
        wait_for_status(admin, bot["id"], {"completed"})
        # Enabled again: the keys work again.
        admin.patch(f"/admin/users/{user['id']}", json={"disabled": False})
        assert client.get("/bots").status_code == 200


def test_an_expired_key_is_refused_even_from_the_cache(manager: Manager) -> None:
    user, _ = manager.new_user()
    with manager.admin() as admin:
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"expires_in_s": 2}).json()
        assert key["expires_at"] is not None
    with _as(manager, key["api_key"]) as client:
        assert client.get("/bots").status_code == 200  # now in the cache
        wait_until(
            lambda: client.get("/bots").status_code == 401,
            timeout=5,
            interval=0.2,
            what="the expired key refused",
        )
        refused = client.post("/bots", json=DEMO)
        assert refused.status_code == 401 and _code(refused) == "key_expired"
    assert _bots_of(manager, user["id"]) == []


def test_a_read_only_key_cannot_change_anything(manager: Manager) -> None:
    user, writer = manager.new_user()
    bot = writer.post("/bots", json=DEMO).json()
    wait_for_status(writer, bot["id"], {"active"})
    with manager.admin() as admin:
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"scopes": ["bots:read"]}).json()
    bot_path = f"/bots/{bot['id']}"
    with _as(manager, key["api_key"]) as reader:
        assert reader.get(bot_path).status_code == 200
        assert reader.get(f"{bot_path}/transitions").status_code == 200
        attempts = [
            reader.post("/bots", json=DEMO),
            reader.post(f"{bot_path}/stop"),
            reader.patch(f"{bot_path}/config", json={"config": {"x": 1}}),
            reader.put(f"{bot_path}/config", json={"config": {"x": 1}}),
            reader.delete(bot_path),
            reader.put("/webhook", json={"url": "https://example.com/hook"}),
            reader.post("/webhook/rotate-secret"),
            reader.delete(f"{bot_path}/webhook"),
        ]
        for response in attempts:
            assert response.status_code == 403, (response.request.url, response.text)
            assert _code(response) == "insufficient_scope"
    # Nothing changed: one bot, still active, config untouched, no command, no webhook.
    assert _bots_of(manager, user["id"]) == [bot["id"]]
    now = writer.get(bot_path).json()
    assert now["status"] == "active" and now["config"] == {}
    assert writer.get(f"{bot_path}/commands").json()["items"] == []
    assert writer.get("/webhook").status_code == 404
    # The same write with a full key works (the 403 was the scope, not the request).
    assert writer.post(f"{bot_path}/stop").status_code == 202


def test_bad_key_requests_change_nothing(manager: Manager) -> None:
    owner, _ = manager.new_user()
    other, _ = manager.new_user()
    with manager.admin() as admin:
        before = _keys(admin, owner["id"])
        for body in (
            {"scopes": ["admin"]},
            {"scopes": []},
            {"expires_in_s": 0},
            {"expires_in_s": "60"},
            {"name": ""},
            {"api_key": "mine"},
        ):
            response = admin.post(f"/admin/users/{owner['id']}/keys", json=body)
            assert response.status_code == 422, (body, response.text)
        assert _keys(admin, owner["id"]) == before
        missing = admin.post("/admin/users/no-such-user/keys", json={})
        assert missing.status_code == 404 and _code(missing) == "user_not_found"
        # Revoking a key through another user's path: 404, and the key still works.
        key_id = before[0]["id"]
        foreign = admin.delete(f"/admin/users/{other['id']}/keys/{key_id}")
        assert foreign.status_code == 404 and _code(foreign) == "key_not_found"
        assert _keys(admin, owner["id"]) == before
        for bad in ({"disabled": "yes"}, {"max_concurrent_bots": -1}, {"admin": True}):
            assert admin.patch(f"/admin/users/{owner['id']}", json=bad).status_code == 422
        assert admin.get(f"/admin/users/{owner['id']}").json()["disabled_at"] is None
    with _as(manager, owner["api_key"]) as client:
        assert client.get("/bots").status_code == 200
        # A user's key is not the admin token.
        assert client.get(f"/admin/users/{owner['id']}/keys").status_code == 401
        assert client.post(f"/admin/users/{owner['id']}/keys", json={}).status_code == 401
        assert client.delete(f"/admin/users/{owner['id']}/keys/{key_id}").status_code == 401


# ---- the admin fleet view --------------------------------------------------------------------


def test_the_admin_sees_reads_and_stops_every_users_bots(manager: Manager) -> None:
    _, alice_client = manager.new_user()
    bob, bob_client = manager.new_user()
    a = alice_client.post("/bots", json=DEMO).json()
    b = bob_client.post("/bots", json=DEMO).json()
    wait_for_status(bob_client, b["id"], {"active"})
    with manager.admin() as admin:
        everyone = {x["id"] for x in admin.get("/bots", params={"limit": 1000}).json()["items"]}
        assert {a["id"], b["id"]} <= everyone
        only_bob = admin.get("/bots", params={"user_id": bob["id"]}).json()["items"]
        assert [x["id"] for x in only_bob] == [b["id"]]
        for path in ("", "/transitions", "/commands", "/attempts", "/logs"):
            assert admin.get(f"/bots/{b['id']}{path}").status_code == 200, path
        stopped = admin.post(f"/bots/{b['id']}/stop")
        assert stopped.status_code == 202
        wait_for_status(admin, b["id"], {"completed"})
        rows = admin.get(f"/bots/{b['id']}/transitions").json()["items"]
        stop = next(r for r in rows if r["to"] == "stopping")
        assert stop["actor"] == "admin" and stop["source"] == "api"
        leave = admin.get(f"/bots/{b['id']}/commands").json()["items"][0]
        assert leave["action"] == "leave" and leave["actor"] == "admin"
    # A user's key never becomes the fleet view: `user_id` of another user lists its own bots.
    assert [
        x["id"] for x in alice_client.get("/bots", params={"user_id": bob["id"]}).json()["items"]
    ] == [a["id"]]
    assert alice_client.get(f"/bots/{b['id']}").status_code == 404
    assert alice_client.get(f"/bots/{b['id']}/transitions").status_code == 404
    assert alice_client.post(f"/bots/{a['id']}/stop").status_code == 202


# ---- the cache entry, unit level -------------------------------------------------------------


def test_the_database_read_refuses_revoked_expired_and_disabled(
    sessions: sessionmaker[Session],
) -> None:
    """On a cache miss every condition is checked in the one query; on a hit, expiry again."""
    with sessions.begin() as session:
        user, key = users.create_user(session, name="u1", max_concurrent_bots=1)
        user_id = user.id
        _, short = users.create_key(session, user_id, scopes=["bots:read"], expires_in_s=3600)
    with sessions() as session:
        caller = auth.caller_for_key(session, None, token=short)
        assert caller.scopes == frozenset({"bots:read"})
        with pytest.raises(Forbidden) as refused:
            auth.check_scope(caller, writes=True)
        assert refused.value.code == "insufficient_scope"
        auth.check_scope(caller, writes=False)
    with sessions.begin() as session:
        session.query(ApiKey).filter(ApiKey.scopes == "bots:read").update(
            {ApiKey.expires_at: ApiKey.created_at}
        )
    with sessions() as session, pytest.raises(Unauthorized):
        auth.caller_for_key(session, None, token=short)
    with sessions.begin() as session:
        users.update_user(session, user_id=user_id, disabled=True)
    with sessions() as session, pytest.raises(Unauthorized):
        auth.caller_for_key(session, None, token=key)
    with sessions.begin() as session:
        users.update_user(session, user_id=user_id, disabled=False)
        assert auth.caller_for_key(session, None, token=key).id == user_id


def test_key_usage_is_written_at_most_once_a_minute(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _, key = users.create_user(session, name="u2", max_concurrent_bots=1)
        key_id = auth.caller_for_key(session, None, token=key).key_id
    usage = KeyUsage(sessions)
    usage.touch(key_id)
    assert usage.flush() == 1
    for _ in range(100):
        usage.touch(key_id)
    assert usage.flush() == 0  # noted less than a minute ago: no write at all
    with sessions() as session:
        assert session.get(ApiKey, key_id).last_used_at is not None  # type: ignore[union-attr]


# ---- the CLI ---------------------------------------------------------------------------------


def test_the_cli_manages_keys_disables_users_reads_the_log_and_lists_every_users_bots(
    manager: Manager, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
        "BOTFLEET_KEY": None,
    }
    admin_env = {**base, "BOTFLEET_ADMIN_TOKEN": ADMIN_TOKEN}

    def cli(*args: str, env: dict[str, str | None] = admin_env) -> Result:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    user, client = manager.new_user()
    bot = client.post("/bots", json=DEMO).json()
    made = cli("users", "keys", "create", user["id"], "--name", "ci", "--read-only", "--json")
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    assert key["scopes"] == ["bots:read"]
    listed = cli("users", "keys", "ls", user["id"])
    assert key["prefix"] in listed.stdout and key["api_key"] not in listed.stdout
    as_reader = {**base, "BOTFLEET_KEY": key["api_key"]}
    refused = cli("bots", "stop", bot["id"], env=as_reader)
    assert refused.exit_code != 0 and "insufficient_scope" in refused.output
    assert cli("users", "keys", "revoke", user["id"], key["id"]).exit_code == 0
    gone = cli("bots", "ls", env=as_reader)
    assert gone.exit_code != 0 and "invalid_token" in gone.output
    # The fleet view: every user's bots with the admin token, one user's with --user.
    every = json.loads(cli("bots", "ls", "--all-users", "--all", "--json").stdout)
    assert bot["id"] in {b["id"] for b in every["items"]}
    one = json.loads(cli("bots", "ls", "--all-users", "--user", user["id"], "--json").stdout)
    assert [b["id"] for b in one["items"]] == [bot["id"]]
    assert cli("bots", "ls", "--user", user["id"]).exit_code != 0  # --user needs --all-users
    assert cli("users", "disable", user["id"]).stdout.strip().endswith("disabled")
    assert client.get("/bots").status_code == 401
    log = cli("audit", "--user", user["id"], "--json")
    actions = [r["action"] for r in json.loads(log.stdout)["items"]]
    assert actions[:3] == ["user_updated", "key_revoked", "key_created"]
    assert "key_revoked" in cli("audit", "--user", user["id"]).stdout
    assert cli("users", "enable", user["id"]).exit_code == 0
    assert client.get("/bots").status_code == 200
