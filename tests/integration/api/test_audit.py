"""Issue 18, item 6: who did what. Every transition and command names its actor (the API key
that asked, `admin`, or the part of the manager that acted), and `GET /admin/audit` lists the
admin's actions newest first with what they changed, never a key."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import Bot, Event
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.services import audit, users
from botfleet.manager.services.commands import create_leave
from botfleet.manager.services.transitions import transition
from tests.support import Manager, wait_for_status

DEMO = {"bot": "demo", "config": {}}


def _rows(client: httpx.Client, bot_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/bots/{bot_id}/transitions").json()["items"])


def _only_key(manager: Manager, user_id: str) -> str:
    with manager.admin() as admin:
        (key,) = admin.get(f"/admin/users/{user_id}/keys").json()["items"]
    return str(key["id"])


def test_every_transition_and_command_names_its_actor(manager: Manager) -> None:
    user, client = manager.new_user()
    key_id = _only_key(manager, user["id"])
    bot = client.post("/bots", json=DEMO).json()
    wait_for_status(client, bot["id"], {"active"})
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})
    actors = {(r["from"], r["to"]): r["actor"] for r in _rows(client, bot["id"])}
    assert actors[("requested", "starting")] == "orchestrator"
    assert actors[("starting", "active")] == "runtime"
    assert actors[("active", "stopping")] == f"key:{key_id}"
    assert actors[("stopping", "completed")] in {"runtime", "orchestrator", "reconciler"}
    (leave,) = client.get(f"/bots/{bot['id']}/commands").json()["items"]
    assert leave["action"] == "leave" and leave["actor"] == f"key:{key_id}"
    # A reconfigure names the key that sent it, a second key its own id.
    with manager.admin() as admin:
        other = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "b"}).json()
    live = client.post("/bots", json=DEMO).json()
    wait_for_status(client, live["id"], {"active"})
    with httpx.Client(
        base_url=manager.url, headers={"Authorization": f"Bearer {other['api_key']}"}
    ) as second:
        sent = second.patch(f"/bots/{live['id']}/config", json={"config": {"n": 1}})
        assert sent.status_code == 202 and sent.json()["actor"] == f"key:{other['id']}"
        assert second.post(f"/bots/{live['id']}/stop").status_code == 202
    stop = next(r for r in _rows(client, live["id"]) if r["to"] == "stopping")
    assert stop["actor"] == f"key:{other['id']}"


def test_a_stop_the_manager_decides_names_the_scheduler(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={**DEMO, "max_duration_s": 1}).json()
    wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=30)
    stop = next(r for r in _rows(client, bot["id"]) if r["to"] == "stopping")
    assert stop["actor"] == "scheduler" and stop["reason"] == "max_duration"
    (leave,) = client.get(f"/bots/{bot['id']}/commands").json()["items"]
    assert leave["actor"] == "scheduler"


def test_the_admin_log_lists_admin_actions_newest_first(manager: Manager) -> None:
    user, _ = manager.new_user(max_bots=3)
    uid = user["id"]
    with manager.admin() as admin:
        assert admin.patch(f"/admin/users/{uid}", json={"max_concurrent_bots": 7}).status_code
        key = admin.post(f"/admin/users/{uid}/keys", json={"name": "ci"}).json()
        assert admin.delete(f"/admin/users/{uid}/keys/{key['id']}").status_code == 204
        assert admin.patch(f"/admin/users/{uid}", json={"disabled": True}).status_code == 200
        # An update that changes nothing is not an action.
        assert admin.patch(f"/admin/users/{uid}", json={"disabled": True}).status_code == 200
        answer = admin.get("/admin/audit", params={"user_id": uid})
        assert answer.status_code == 200
        # No key ever reaches the log, only its prefix.
        assert key["api_key"] not in answer.text and user["api_key"] not in answer.text
        rows = answer.json()["items"]
        assert [r["action"] for r in rows] == [
            "user_updated",
            "key_revoked",
            "key_created",
            "user_updated",
            "user_created",
        ]
        assert rows[0]["change"] == {"disabled": [False, True]}
        assert rows[0]["target"] == f"user:{uid}"
        assert rows[1]["target"] == f"key:{key['id']}"
        assert rows[1]["change"]["prefix"] == key["prefix"]
        assert rows[2]["change"]["scopes"] == ["bots:read", "bots:write"]
        assert rows[3]["change"] == {"max_concurrent_bots": [3, 7]}
        assert rows[4]["change"]["name"] == user["name"]
        times = [datetime.fromisoformat(r["at"]) for r in rows]
        assert times == sorted(times, reverse=True)
        # Pages: two at a time give the same rows in the same order.
        paged: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"user_id": uid, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = admin.get("/admin/audit", params=params).json()
            paged += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == rows
        # `since`: only what came at or after it.
        since = rows[1]["at"]
        recent = admin.get("/admin/audit", params={"user_id": uid, "since": since}).json()
        assert [r["action"] for r in recent["items"]] == ["user_updated", "key_revoked"]
        # Another user's actions are not in this user's log, but in the whole one.
        other, _ = manager.new_user()
        assert other["id"] not in {r["user_id"] for r in rows}
        everything = admin.get("/admin/audit", params={"limit": 1000}).json()["items"]
        assert {r["user_id"] for r in everything} >= {uid, other["id"]}
        # Bad input: 422 with a code.
        naive = admin.get("/admin/audit", params={"since": "2026-01-01T00:00:00"})
        assert naive.status_code == 422 and naive.json()["detail"]["code"] == "invalid_since"
        assert admin.get("/admin/audit", params={"since": "yesterday"}).status_code == 422
        assert admin.get("/admin/audit", params={"since": "0.5"}).status_code == 422  # not Unix
        assert admin.get("/admin/audit", params={"cursor": "nope"}).status_code == 422
    # The log is the admin's: a user's key is refused.
    _, fresh = manager.new_user()
    assert fresh.get("/admin/audit").status_code == 401


# ---- services, on both databases -------------------------------------------------------------


def test_a_requests_actor_goes_to_its_transitions_and_commands(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        user, _ = users.create_user(session, name="a1", max_concurrent_bots=5)
        bot = Bot(user_id=user.id, orchestrator="process", bot="demo", config={}, labels={})
        session.add(bot)
        session.flush()
        # A background change (no request actor) is attributed to its source ...
        transition(session, bot, BotStatus.STARTING, reason="launching", source=Source.ORCHESTRATOR)
        transition(session, bot, BotStatus.ACTIVE, reason="started", source=Source.RUNTIME)
        # ... a request's change to the caller that the request authenticated.
        audit.set_request_actor(session, audit.key_actor("k1"))
        row = transition(session, bot, BotStatus.STOPPING, reason="stop", source=Source.API)
        leave = create_leave(session, bot, ttl_s=60, retry_s=1)
        late = transition(session, bot, BotStatus.COMPLETED, reason="exited", source=Source.RUNTIME)
    assert row.actor == "key:k1" and leave.actor == "key:k1"
    assert late.actor == "runtime"  # a runtime move in the same session stays the runtime's
    # The events (SSE, webhooks) carry the actor too.
    with sessions() as session:
        events = session.scalars(select(Event).where(Event.bot_id == bot.id).order_by(Event.id))
        actors = [
            (e.kind, e.data.get("to") or e.data.get("action"), e.data["actor"]) for e in events
        ]
    assert actors == [
        ("transition", "starting", "orchestrator"),
        ("transition", "active", "runtime"),
        ("transition", "stopping", "key:k1"),
        ("command", "leave", "key:k1"),
        ("transition", "completed", "runtime"),
    ]


def test_admin_actions_filter_by_user_and_time(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first, _ = users.create_user(session, name="a2", max_concurrent_bots=1)
        second, _ = users.create_user(session, name="a3", max_concurrent_bots=1)
        ids = first.id, second.id
    time.sleep(0.01)
    cut = datetime.now(UTC)
    with sessions.begin() as session:
        users.update_user(session, user_id=ids[0], max_concurrent_bots=2)
    with sessions() as session:
        mine, _ = audit.list_admin_actions(session, user_id=ids[0])
        assert [r.action for r in mine] == ["user_updated", "user_created"]
        recent, _ = audit.list_admin_actions(session, since=cut)
        assert [(r.action, r.user_id) for r in recent] == [("user_updated", ids[0])]
        later, _ = audit.list_admin_actions(session, since=cut + timedelta(hours=1))
        assert later == []


@pytest.mark.parametrize("source", [Source.RECONCILER, Source.SCHEDULER])
def test_actor_of_a_source(sessions: sessionmaker[Session], source: Source) -> None:
    with sessions() as session:
        assert audit.actor_for(session, source) == source.value
        assert audit.actor_for(session, Source.API) == "api"  # no caller: a direct service call
        audit.set_request_actor(session, audit.ADMIN)
        assert audit.actor_for(session, Source.API) == "admin"
        assert audit.actor_for(session, source) == source.value
