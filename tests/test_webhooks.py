"""Outbound webhooks, end to end: a real manager (PostgreSQL or SQLite, Redis, real bots) POSTing
to real HTTP receivers on loopback; signatures checked with our own `verify()`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.webhook_sender import Claimed, WebhookSender
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Event, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import (
    InvalidSignature,
    new_secret,
    sign,
    signature,
    verify,
)
from botfleet.manager.services.webhook_guard import UrlRefused, check_url
from tests.support import (
    Manager,
    RedisServer,
    running_manager,
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


class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST per path; each path answers the status
    codes queued for it, then 200."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.setdefault(self.path, []).append(
                        {"headers": dict(self.headers.items()), "body": body}
                    )
                    queued = receiver.answers.get(self.path) or []
                    code = queued.pop(0) if queued else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def got(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests.get(path, []))

    def wait_for(self, path: str, count: int, *, timeout: float = 30) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.got(path)) >= count, timeout=timeout, what=f"{count} @ {path}")
        return self.got(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.close()


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
    time.sleep(1)
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
    time.sleep(1.5)
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
    time.sleep(1.5)
    assert receiver.got("/alice") == [] and deliveries(alice) == []
    assert len(receiver.got("/bob")) == 1 and only["headers"]["webhook-id"].startswith("evt_")


def test_a_new_endpoint_gets_no_history(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    stop(client, cancelled_bot(client))
    time.sleep(0.5)
    set_webhook(client, receiver.url("/late"))
    stop(client, cancelled_bot(client))
    [first] = receiver.wait_for("/late", 1)
    time.sleep(1.5)
    assert len(receiver.got("/late")) == 1
    assert json.loads(first["body"])["data"]["to"] == "completed"


def test_bad_urls_are_refused(manager: Manager) -> None:
    _, client = manager.new_user()
    for url in ("ftp://example.com/x", "not a url", "http://user:pw@127.0.0.1/", "http:///x"):
        answer = client.put("/webhook", json={"url": url})
        assert answer.status_code == 422, url
        assert answer.json()["detail"]["code"] == "webhook_url_refused", url


@pytest.mark.db
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


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The reference libraries' test vector (standard-webhooks, python/tests).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, timestamp=1614265330)
    verify(secret, headers, body, now=1614265330 + 10)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, body, now=1614265330 + 3600)
    headers["webhook-signature"] = f"v1,bm90IGl0 {expected}"  # a rotated secret signs alongside
    verify(secret, headers, body, now=1614265330)
    with pytest.raises(InvalidSignature):
        verify(secret, {}, body)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
        "http://240.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "gopher://93.184.215.14/",
        "file:///etc/passwd",
    ],
)
def test_guard_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False)


def test_guard_allows_public_addresses_and_private_when_told() -> None:
    check_url("https://93.184.215.14/hook", allow_private=False)
    check_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(UrlRefused):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_the_sender_checks_the_address_again_before_each_send() -> None:
    sender = WebhookSender(sessionmaker(), Settings(webhook_allow_private=False), box=a_box())
    try:
        payload = {"type": "bot.transition", "id": "evt_1", "timestamp": "x", "data": {}}
        claimed = Claimed("d1", "http://127.0.0.1:9/hook", new_secret(), payload)
        status_code, error, _ = sender.post(claimed)
        assert status_code is None and error is not None and error.startswith("refused:")
    finally:
        sender.close()


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
