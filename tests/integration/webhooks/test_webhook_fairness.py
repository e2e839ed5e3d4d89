"""Webhook fairness: one user's dead or slow endpoint never holds up another's deliveries, a
tick keeps to its budget, and an endpoint that keeps failing is paused by its circuit breaker,
then probed, then resumed. The sender runs against a real database and real HTTP servers on
loopback; the last test drives a real manager and reads the pause in `GET /webhook`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.webhook_sender import WebhookSender
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import User, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.core.webhook_signing import new_secret
from tests.support import Manager, RedisServer, running_manager, wait_until

BOX = SecretBox([Fernet.generate_key().decode()])
LATER = "2099-01-01T00:00:00Z"


class Server:
    """An HTTP endpoint on loopback that answers `code` after `delay_s`, counting requests and
    the most it ever had in flight at once."""

    def __init__(self, *, code: int = 200, delay_s: float = 0.0) -> None:
        self.code, self.delay_s = code, delay_s
        self.count = self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    server.count += 1
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(server.delay_s)
                with server.lock:
                    server.in_flight -= 1
                self.send_response(server.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.close()


def serve(servers: list[Server], **kwargs: Any) -> Server:
    server = Server(**kwargs)
    servers.append(server)
    return server


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allow_private": True,  # the endpoints listen on loopback
        "webhook_timeout_s": 2.0,
        "webhook_retry_s": 0.01,  # failed deliveries are due again at the next tick
        **overrides,
    }
    return Settings(**values)


def endpoint(sessions: sessionmaker[Session], url: str) -> str:
    """A new user's default endpoint."""
    with transaction(sessions) as session:
        user = User(name=f"user-{uuid.uuid4().hex[:10]}", max_concurrent_bots=10)
        session.add(user)
        session.flush()
        row = WebhookEndpoint(
            user_id=user.id, url=url, secret_sealed=BOX.seal_text(new_secret()), enabled=True
        )
        session.add(row)
        session.flush()
        return row.id


def subscription_beside(sessions: sessionmaker[Session], endpoint_id: str, url: str) -> str:
    """Another endpoint of the same user (`POST /webhooks`): its own queue, breaker, lanes."""
    with transaction(sessions) as session:
        owner = session.get(WebhookEndpoint, endpoint_id)
        assert owner is not None
        row = WebhookEndpoint(
            user_id=owner.user_id,
            url=url,
            secret_sealed=BOX.seal_text(new_secret()),
            enabled=True,
            subscription=True,
        )
        session.add(row)
        session.flush()
        return row.id


def queue(
    sessions: sessionmaker[Session], endpoint_id: str, events: range, *, bots: int = 1
) -> None:
    """Deliveries due now for `events`, spread over `bots` bots."""
    now = utcnow()
    with transaction(sessions) as session:
        for event_id in events:
            session.add(
                WebhookDelivery(
                    endpoint_id=endpoint_id,
                    event_id=event_id,
                    bot_id=f"bot-{event_id % bots}",
                    payload={"type": "bot.transition", "id": f"evt_{event_id}", "data": {}},
                    status="pending",
                    next_attempt_at=now,
                    expires_at=now + timedelta(days=1),
                )
            )


def attempts(sessions: sessionmaker[Session], endpoint_id: str) -> int:
    with sessions() as session:
        return int(
            session.scalar(
                select(func.count(WebhookAttempt.id))
                .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
            )
            or 0
        )


def statuses(sessions: sessionmaker[Session], endpoint_id: str) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(WebhookDelivery.status).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        )


def state(sessions: sessionmaker[Session], endpoint_id: str) -> WebhookEndpoint:
    with sessions() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row


def end_pause(sessions: sessionmaker[Session], endpoint_id: str) -> None:
    """As if the pause had run out (instead of sleeping through it)."""
    past = utcnow() - timedelta(seconds=1)
    with transaction(sessions) as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(paused_until=past)
        )


def test_a_dead_endpoints_backlog_does_not_hold_up_another_users_delivery(
    sessions: sessionmaker[Session], refused_url: str
) -> None:
    dead = endpoint(sessions, f"{refused_url}/hook")  # nothing listens
    healthy_server = Server()
    try:
        healthy = endpoint(sessions, healthy_server.url)
        # The dead endpoint's own user's other endpoint is not held up either.
        sibling = subscription_beside(sessions, dead, healthy_server.url)
        queue(sessions, dead, range(1, 301), bots=30)
        queue(sessions, healthy, range(301, 302))
        queue(sessions, sibling, range(302, 303))
        with sessions() as session:
            oldest = session.scalars(
                select(WebhookDelivery.endpoint_id).order_by(WebhookDelivery.event_id).limit(100)
            )
            assert set(oldest) == {dead}, "the 100 oldest due (the old batch) are all A's"

        sender = WebhookSender(sessions, settings(), box=BOX)
        try:
            sender.send_due()  # one tick
        finally:
            sender.close()
        assert healthy_server.count == 2 and statuses(sessions, healthy) == ["delivered"]
        assert statuses(sessions, sibling) == ["delivered"]
        # The dead endpoint got one attempt per lane (each stops at its first failure).
        assert attempts(sessions, dead) <= 2
    finally:
        healthy_server.close()


def test_a_slow_endpoint_keeps_to_its_concurrency_and_the_tick_budget(
    sessions: sessionmaker[Session], servers: list[Server]
) -> None:
    slow_server = serve(servers, delay_s=0.3)
    healthy_server = serve(servers)
    slow = endpoint(sessions, slow_server.url)
    healthy = endpoint(sessions, healthy_server.url)
    queue(sessions, slow, range(1, 301), bots=10)
    queue(sessions, healthy, range(301, 303), bots=2)
    budget_s, timeout_s = 1.0, 2.0
    sender = WebhookSender(
        sessions,
        settings(
            webhook_tick_budget_s=budget_s,
            webhook_timeout_s=timeout_s,
            webhook_endpoint_batch=100,
            webhook_batch=300,
        ),
        box=BOX,
    )
    try:
        started = time.monotonic()
        sender.send_due()
        elapsed = time.monotonic() - started
    finally:
        sender.close()  # lets a request still running end
    # Two lanes of 0.3 s requests, none started after the 1 s budget: at most 4 each.
    assert 2 <= slow_server.count <= 8, slow_server.count
    assert slow_server.most_in_flight == 2, "two requests in flight, never more"
    assert elapsed < budget_s + timeout_s, f"the tick took {elapsed:.1f} s"
    assert healthy_server.count == 2 and statuses(sessions, healthy) == ["delivered"] * 2


def test_each_tick_takes_turns_between_endpoints(
    sessions: sessionmaker[Session], servers: list[Server]
) -> None:
    """With a batch smaller than the endpoints' backlog, every endpoint is served in turn."""
    servers_ = [serve(servers) for _ in range(3)]
    ids = [endpoint(sessions, s.url) for s in servers_]
    for index, endpoint_id in enumerate(ids):
        queue(sessions, endpoint_id, range(index * 100 + 1, index * 100 + 21))
    sender = WebhookSender(sessions, settings(webhook_batch=5, webhook_endpoint_batch=5), box=BOX)
    try:
        sender.send_due()
        assert sum(s.count for s in servers_) == 5 and max(s.count for s in servers_) == 5
        sender.send_due()
        sender.send_due()
    finally:
        sender.close()
    assert sorted(s.count for s in servers_) == [5, 5, 5], "three ticks, three endpoints"


def test_a_failing_endpoint_is_paused_then_probed_then_resumed(
    sessions: sessionmaker[Session], servers: list[Server]
) -> None:
    server = serve(servers, code=500)
    hook = endpoint(sessions, server.url)
    queue(sessions, hook, range(1, 21), bots=4)
    sender = WebhookSender(
        sessions, settings(webhook_breaker_failures=3, webhook_breaker_pause_s=60), box=BOX
    )
    try:
        ticks = 0
        while state(sessions, hook).paused_until is None:
            ticks += 1
            assert ticks <= 3, "not paused after 3 failures"
            sender.send_due()
            time.sleep(0.02)  # the retry delay
        paused = state(sessions, hook)
        assert paused.consecutive_failures >= 3 and paused.pause_s == 60
        assert paused.paused_until is not None and paused.paused_until > utcnow()
        failed = server.count
        assert failed <= 3 + 1, "at most one more than the limit (two lanes at once)"

        for _ in range(3):
            sender.send_due()
        assert server.count == failed, "a paused endpoint receives nothing"
        assert set(statuses(sessions, hook)) == {"pending"}, "its deliveries wait"

        end_pause(sessions, hook)
        sender.send_due()
        assert server.count == failed + 1, "one probe, though two lanes could run"
        again = state(sessions, hook)
        assert again.pause_s == 120 and again.paused_until is not None, "a failed probe doubles"

        server.code = 200
        end_pause(sessions, hook)
        sender.send_due()
        assert server.count == failed + 2, "one probe again"
        healed = state(sessions, hook)
        assert healed.paused_until is None and healed.consecutive_failures == 0
        assert healed.pause_s == 0

        for _ in range(4):
            sender.send_due()
    finally:
        sender.close()
    assert set(statuses(sessions, hook)) == {"delivered"}, "delivery resumed"


# ---- the pause as users see it -----------------------------------------------------------


PAUSE_S = 4
MANAGER_ENV = {
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
    "BOTFLEET_WEBHOOK_RETRY_S": "0.2",
    "BOTFLEET_WEBHOOK_BREAKER_FAILURES": "2",
    "BOTFLEET_WEBHOOK_BREAKER_PAUSE_S": str(PAUSE_S),
}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("webhook-fairness")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def cancelled_bot(client: httpx.Client) -> str:
    """A bot scheduled for later, then stopped: one transition, so one delivery."""
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert bot.status_code == 201, bot.text
    return str(bot.json()["id"])


def test_get_webhook_shows_the_pause_of_a_failing_override(
    manager: Manager, servers: list[Server]
) -> None:
    _, client = manager.new_user()
    healthy, failing = serve(servers), serve(servers, code=503)
    assert client.put("/webhook", json={"url": healthy.url}).status_code == 201
    special = cancelled_bot(client)
    path = f"/bots/{special}/webhook"
    assert client.put(path, json={"url": failing.url}).status_code == 201
    assert client.post(f"/bots/{special}/stop").status_code == 202

    shown = wait_until(
        lambda: (w := client.get(path).json())["paused_until"] is not None and w,
        timeout=20,
        what="the override paused",
    )
    assert shown["consecutive_failures"] == 2 and shown["failing_since"] is not None
    assert failing.count == 2
    default = client.get("/webhook").json()
    assert default["paused_until"] is None and default["consecutive_failures"] == 0

    # The default endpoint keeps delivering meanwhile; the paused one gets nothing.
    plain = cancelled_bot(client)
    assert client.post(f"/bots/{plain}/stop").status_code == 202
    wait_until(lambda: healthy.count >= 1, timeout=20, what="the default endpoint's delivery")
    assert failing.count == 2, "no attempt while paused"

    failing.code = 200  # the receiver is back: the probe after the pause delivers
    resumed = wait_until(
        lambda: (w := client.get(path).json())["paused_until"] is None and w,
        timeout=3 * PAUSE_S + 10,  # on a slow machine a probe may have failed (pause doubled)
        what="the pause lifted",
    )
    assert failing.count >= 3
    assert resumed["consecutive_failures"] == 0 and resumed["failing_since"] is None
