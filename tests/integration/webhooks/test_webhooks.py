"""Outbound webhooks, end to end: a real manager (PostgreSQL or SQLite, Redis, real bots) POSTing
to real HTTP receivers on loopback; signatures checked with our own `verify()`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.webhook_sender import WebhookSender
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Event, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import InvalidSignature, new_secret, verify
from tests.listeners import Receiver
from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    transitions,
    wait_for_status,
    wait_until,
)

LATER = "2099-01-01T00:00:00Z"
GIVE_UP_S = 8
MANAGER_ENV = {
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on loopback
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
    "BOTFLEET_WEBHOOK_RETRY_S": "0.5",
    "BOTFLEET_WEBHOOK_GIVE_UP_S": str(GIVE_UP_S),
}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("webhooks")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


@pytest.fixture(scope="module")
def strict_manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """A manager with the default: private addresses refused."""
    root = tmp_path_factory.mktemp("webhooks-strict")
    with running_manager(root, redis_server.url) as instance:
        yield instance


def a_box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode()])


def set_webhook(client: httpx.Client, url: str, path: str = "/webhook") -> dict[str, Any]:
    answer = client.put(path, json={"url": url})
    assert answer.status_code == 201, answer.text
    return answer.json()


def cancelled_bot(client: httpx.Client) -> str:
    """A bot scheduled for later, then stopped: exactly one transition (requested → completed)."""
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert bot.status_code == 201, bot.text
    return str(bot.json()["id"])


def stop(client: httpx.Client, bot_id: str) -> None:
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202


def deliveries(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/webhook/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def wait_delivery(client: httpx.Client, status: str, *, timeout: float = 30) -> dict[str, Any]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: next((d for d in deliveries(client) if d["status"] == status), None),
        timeout=timeout,
        what=f"a {status} delivery",
    )


# ---- end to end -----------------------------------------------------------------------------


def test_each_transition_is_posted_signed_and_in_order(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    created = set_webhook(client, receiver.url("/lifecycle"))
    assert created["secret"].startswith("whsec_") and created["bot_id"] is None
    shown = client.get("/webhook").json()
    assert shown["url"] == receiver.url("/lifecycle") and shown["secret"] is None
    again = client.put("/webhook", json={"url": receiver.url("/lifecycle")})
    assert again.status_code == 200 and again.json()["secret"] is None, "the secret is kept"

    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(client, bot["id"], {"active"})
    stop(client, bot["id"])
    wait_for_status(client, bot["id"], {"completed"})
    history = client.get(f"/bots/{bot['id']}/transitions").json()["items"]
    got = receiver.wait_for("/lifecycle", len(history))

    bodies = [json.loads(r["body"]) for r in got]
    assert [(b["data"]["from"], b["data"]["to"]) for b in bodies] == [
        (t["from"], t["to"]) for t in history
    ]
    assert [b["data"]["reason"] for b in bodies] == [t["reason"] for t in history]
    event_ids = [int(b["id"].removeprefix("evt_")) for b in bodies]
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == len(event_ids)
    for request, body in zip(got, bodies, strict=True):
        assert body["type"] == "bot.transition" and body["data"]["bot_id"] == bot["id"]
        assert request["headers"]["webhook-id"] == body["id"]
        assert request["headers"]["Content-Type"] == "application/json"
        verify(created["secret"], request["headers"], request["body"])
        with pytest.raises(InvalidSignature):
            verify(new_secret(), request["headers"], request["body"])
        with pytest.raises(InvalidSignature):
            verify(created["secret"], request["headers"], request["body"] + b" ")

    listed = deliveries(client)
    assert len(listed) == len(history)
    assert [d["webhook_id"] for d in listed] == [b["id"] for b in reversed(bodies)], "newest first"
    for delivery in listed:
        assert delivery["status"] == "delivered" and delivery["attempt_count"] == 1
        assert [a["status_code"] for a in delivery["attempts"]] == [200]
        assert delivery["attempts"][0]["error"] is None
    manager.loop_runs("webhooks")  # a second send would have been made by now
    assert len(receiver.got("/lifecycle")) == len(history), "each event sent once"


def test_failures_are_retried_with_backoff_until_delivered(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    created = set_webhook(client, receiver.url("/flaky"))
    receiver.answers["/flaky"] = [500, 500]
    stop(client, cancelled_bot(client))

    delivered = wait_delivery(client, "delivered")
    assert delivered["attempt_count"] == 3
    attempts = delivered["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 500", None]
    gaps = [
        (datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()
        for a, b in pairwise(attempts)
    ]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, f"backoff 0.5 s then 1 s, got {gaps}"
    got = receiver.got("/flaky")
    assert len(got) == 3 and len({r["headers"]["webhook-id"] for r in got}) == 1
    assert len({r["body"] for r in got}) == 1, "every attempt sends the same envelope"
    for request in got:
        verify(created["secret"], request["headers"], request["body"])
    one = client.get(f"/webhook/deliveries/{delivered['id']}").json()
    assert one["status"] == "delivered" and len(one["attempts"]) == 3


def test_gives_up_after_the_window_and_redelivers_on_request(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    set_webhook(client, receiver.url("/down"))
    receiver.answers["/down"] = [503] * 1000
    stop(client, cancelled_bot(client))

    failed = wait_delivery(client, "failed", timeout=GIVE_UP_S + 20)
    assert failed["attempt_count"] >= 3 and failed["next_attempt_at"] is None
    assert all(a["status_code"] == 503 for a in failed["attempts"])
    sent = len(receiver.got("/down"))
    assert sent == failed["attempt_count"]

    receiver.answers["/down"] = []  # the receiver is back
    again = client.post(f"/webhook/deliveries/{failed['id']}/redeliver")
    assert again.status_code == 202 and again.json()["status"] == "pending"
    got = receiver.wait_for("/down", sent + 1)
    assert got[-1]["body"] == got[0]["body"]
    done = wait_delivery(client, "delivered")
    assert done["id"] == failed["id"] and done["attempts"][-1]["status_code"] == 200

    # A delivered one can be sent again too.
    assert client.post(f"/webhook/deliveries/{done['id']}/redeliver").status_code == 202
    receiver.wait_for("/down", sent + 2)

    _, stranger = manager.new_user()
    for path in (f"/webhook/deliveries/{done['id']}", "/webhook/deliveries/nope"):
        assert stranger.get(path).json()["detail"]["code"] == "delivery_not_found"
    refused = stranger.post(f"/webhook/deliveries/{done['id']}/redeliver")
    assert refused.status_code == 404
    assert deliveries(stranger) == []


def test_a_bot_override_takes_that_bots_events_from_the_default(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    default = set_webhook(client, receiver.url("/default"))
    special, plain = cancelled_bot(client), cancelled_bot(client)
    override = set_webhook(client, receiver.url("/override"), f"/bots/{special}/webhook")
    assert override["bot_id"] == special and override["secret"] != default["secret"]
    assert client.get(f"/bots/{special}/webhook").json()["url"] == receiver.url("/override")
    assert client.get(f"/bots/{plain}/webhook").json()["detail"]["code"] == "webhook_not_found"

    stop(client, special)
    stop(client, plain)
    [to_override] = receiver.wait_for("/override", 1)
    [to_default] = receiver.wait_for("/default", 1)
    assert json.loads(to_override["body"])["data"]["bot_id"] == special
    assert json.loads(to_default["body"])["data"]["bot_id"] == plain
    verify(override["secret"], to_override["headers"], to_override["body"])
    verify(default["secret"], to_default["headers"], to_default["body"])
    assert {d["bot_id"] for d in deliveries(client, bot_id=special)} == {special}
    manager.loop_runs("webhooks")
    assert len(receiver.got("/default")) == 1 and len(receiver.got("/override")) == 1

    # Another user can neither see nor set a webhook on this bot.
    _, stranger = manager.new_user()
    assert stranger.get(f"/bots/{special}/webhook").status_code == 404
    put = stranger.put(f"/bots/{special}/webhook", json={"url": receiver.url("/steal")})
    assert put.status_code == 404 and put.json()["detail"]["code"] == "bot_not_found"

    assert client.delete(f"/bots/{special}/webhook").status_code == 204
    assert client.get(f"/bots/{special}/webhook").status_code == 404
    assert client.delete("/webhook").status_code == 204
    assert client.get("/webhook").json()["detail"]["code"] == "webhook_not_found"


def test_another_users_endpoint_gets_nothing(manager: Manager, receiver: Receiver) -> None:
    _, alice = manager.new_user()
    _, bob = manager.new_user()
    set_webhook(alice, receiver.url("/alice"))
    set_webhook(bob, receiver.url("/bob"))
    stop(bob, cancelled_bot(bob))
    [only] = receiver.wait_for("/bob", 1)
    manager.loop_runs("webhooks")
    assert receiver.got("/alice") == [] and deliveries(alice) == []
    assert len(receiver.got("/bob")) == 1 and only["headers"]["webhook-id"].startswith("evt_")


def test_a_new_endpoint_gets_no_history(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    earlier = cancelled_bot(client)
    stop(client, earlier)
    wait_until(
        lambda: [move[1] for move in transitions(client, earlier)] == ["completed"],
        what="the earlier bot's event, before the endpoint exists",
    )
    set_webhook(client, receiver.url("/late"))
    stop(client, cancelled_bot(client))
    [first] = receiver.wait_for("/late", 1)
    manager.loop_runs("webhooks")
    assert len(receiver.got("/late")) == 1
    assert json.loads(first["body"])["data"]["to"] == "completed"


def test_bad_urls_are_refused(manager: Manager) -> None:
    _, client = manager.new_user()
    for url in ("ftp://example.com/x", "not a url", "http://user:pw@127.0.0.1/", "http:///x"):
        answer = client.put("/webhook", json={"url": url})
        assert answer.status_code == 422, url
        assert answer.json()["detail"]["code"] == "webhook_url_refused", url


def test_private_addresses_are_refused_unless_allowed(strict_manager: Manager) -> None:
    _, client = strict_manager.new_user()
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
    ):
        answer = client.put("/webhook", json={"url": url})
        assert answer.status_code == 422, url
        assert answer.json()["detail"]["code"] == "webhook_url_refused", url
    assert client.get("/webhook").status_code == 404, "nothing was stored"
    bot_id = cancelled_bot(client)
    answer = client.put(f"/bots/{bot_id}/webhook", json={"url": "http://127.0.0.1/x"})
    assert answer.json()["detail"]["code"] == "webhook_url_refused"


# ---- the parts, without a manager -----------------------------------------------------------


def test_the_horizon_waits_for_a_gap_in_the_outbox_then_passes_it(
    sessions: sessionmaker[Session],
) -> None:
    sender = WebhookSender(sessions, Settings(webhook_settle_s=5), box=a_box())
    now = utcnow()

    def event(event_id: int, age_s: float) -> Event:
        at = now - timedelta(seconds=age_s)
        return Event(id=event_id, user_id="u", bot_id="b", kind="transition", data={}, at=at)

    try:
        with transaction(sessions) as session:
            session.add_all([event(1, 0), event(2, 0), event(4, 0), event(5, 0)])
        with sessions() as session:
            assert sender.horizon(session, floor=0) == 2, "3 may still be committing"
        with transaction(sessions) as session:
            session.add(event(3, 0))
        with sessions() as session:
            assert sender.horizon(session, floor=0) == 5
        with transaction(sessions) as session:
            session.add_all([event(7, 60), event(8, 0)])
        with sessions() as session:
            assert sender.horizon(session, floor=5) == 8, "6 was rolled back long ago"
            assert sender.horizon(session, floor=8) == 8
    finally:
        sender.close()
