"""Issue 14, items 6 and 7: webhooks cannot be turned against the manager's own network by
DNS rebinding, and their signing secrets are sealed at rest.

The rebinding attack: a name answers a public address to the guard's check and 127.0.0.1 to the
HTTP client's own resolution a moment later. The resolver here is faked in-process
(`socket.getaddrinfo`, which both the guard and httpx's connection use) and a real HTTP server
listens on loopback: it must never receive the signed POST.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from botfleet.manager.background.webhook_sender import Claimed, WebhookSender
from botfleet.manager.core.db import make_engine
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import new_secret, verify
from botfleet.manager.services.webhook_guard import check_url, pin
from tests.fakes import FakeDns
from tests.support import (
    REPO,
    Manager,
    RedisServer,
    running_manager,
    user_env,
    wait_for_status,
    wait_until,
)

PUBLIC = "93.184.215.14"  # a public address (the guard accepts it); never reached in tests
REBINDING = "hooks.rebind.test"
PINNED = "hooks.pinned.test"
LATER = "2099-01-01T00:00:00Z"
KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
PAYLOAD = {"type": "bot.transition", "id": "evt_1", "timestamp": "t", "data": {}}


class Receiver:
    """An HTTP(S) server on 127.0.0.1 recording each request; `/redirect` answers 302."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                    )
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.close()


def sender_with(settings: Settings) -> WebhookSender:
    return WebhookSender(sessionmaker(), settings, box=SecretBox([KEY_1]))


# ---- DNS rebinding ---------------------------------------------------------------------------


def test_rebinding_reached_loopback_when_the_name_was_resolved_twice(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """The attack, as the sender did it before pinning: check the URL, then let httpx resolve
    the name again. The check passes on the public answer; the POST lands on loopback."""
    FakeDns(monkeypatch, {REBINDING: [PUBLIC, "127.0.0.1"]})
    url = f"http://{REBINDING}:{receiver.port}/hook"
    check_url(url, allow_private=False)
    with httpx.Client(trust_env=False) as client:
        assert client.post(url, content=b"{}").status_code == 200
    assert [r["path"] for r in receiver.got()] == ["/hook"], "the unpinned send reached loopback"


def test_a_rebinding_name_never_gets_a_post_to_loopback(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    dns = FakeDns(monkeypatch, {REBINDING: [PUBLIC, "127.0.0.1"]})
    sender = sender_with(Settings(webhook_allow_private=False, webhook_timeout_s=1))
    claimed = Claimed("d1", f"http://{REBINDING}:{receiver.port}/hook", new_secret(), PAYLOAD)
    try:
        # Attempt 1: the name says public; the request goes to that very address (which does
        # not answer here), never to a second resolution's 127.0.0.1.
        status_code, error, _ = sender.post(claimed)
        assert status_code is None and error is not None and not error.startswith("refused")
        assert dns.lookups.count(REBINDING) == 1, "resolved once, for the check"
        assert PUBLIC in dns.lookups, "the connection went to the address checked"
        # Attempt 2: the name now says loopback, and is refused before anything is sent.
        status_code, error, _ = sender.post(claimed)
        assert status_code is None and error is not None and error.startswith("refused:")
        assert "127.0.0.1" in error
    finally:
        sender.close()
    assert receiver.got() == [], "the loopback server received a POST"


def test_a_pinned_send_still_delivers_with_the_hosts_name(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """With private addresses allowed (the loopback receiver), a name that exists only in the
    fake resolver is delivered to: the request went to the pinned address, named by Host."""
    FakeDns(monkeypatch, {PINNED: ["127.0.0.1"]})
    sender = sender_with(Settings(webhook_allow_private=True))
    secret = new_secret()
    try:
        claimed = Claimed("d1", f"http://{PINNED}:{receiver.port}/hook?x=1", secret, PAYLOAD)
        assert sender.post(claimed)[:2] == (200, None)
    finally:
        sender.close()
    [request] = receiver.got()
    assert request["path"] == "/hook?x=1"
    assert request["headers"]["Host"] == f"{PINNED}:{receiver.port}"
    verify(secret, request["headers"], request["body"])


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    sender = sender_with(Settings(webhook_allow_private=True))
    try:
        claimed = Claimed("d1", f"http://127.0.0.1:{receiver.port}/redirect", new_secret(), PAYLOAD)
        assert sender.post(claimed)[:2] == (302, "HTTP 302")
    finally:
        sender.close()
    assert [r["path"] for r in receiver.got()] == ["/redirect"], "the redirect was followed"


def _certificate(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (its own CA), as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_to_the_pinned_address_still_verifies_the_certificate_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Connecting to an address instead of the name must not weaken TLS: the certificate is
    checked against the name (SNI), and a certificate for another name is refused."""
    cert, key = _certificate("hooks.tls.test", tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    receiver = Receiver(tls=server_tls)
    FakeDns(monkeypatch, {"hooks.tls.test": ["127.0.0.1"], "other.tls.test": ["127.0.0.1"]})
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        with httpx.Client(verify=trust, trust_env=False) as client:
            for name, ok in (("hooks.tls.test", True), ("other.tls.test", False)):
                target = pin(f"https://{name}:{receiver.port}/hook", allow_private=True)
                assert ipaddress.ip_address(target.address).is_loopback
                send = {"headers": target.headers, "extensions": target.extensions}
                if ok:
                    assert client.post(target.url, content=b"{}", **send).status_code == 200
                else:
                    with pytest.raises(httpx.ConnectError, match="certificate"):
                        client.post(target.url, content=b"{}", **send)
    finally:
        receiver.close()
    assert [r["headers"]["Host"] for r in receiver.got()] == [f"hooks.tls.test:{receiver.port}"]


# ---- signing secrets sealed at rest ----------------------------------------------------------


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    env = {
        "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
        "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
        "BOTFLEET_SECRETS_KEYS": KEY_1,
    }
    with running_manager(
        tmp_path_factory.mktemp("sealed-hooks"), redis_server.url, extra_env=env
    ) as m:
        yield m


def endpoint_rows(database_url: str) -> list[dict[str, Any]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM webhook_endpoints")).mappings().all()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


def stopped_bot(client: httpx.Client) -> None:
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert bot.status_code == 201, bot.text
    assert client.post(f"/bots/{bot.json()['id']}/stop").status_code == 202
    wait_for_status(client, bot.json()["id"], {"completed"})


def test_signing_secrets_are_sealed_and_survive_key_rotation(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    created = client.put("/webhook", json={"url": f"http://127.0.0.1:{receiver.port}/sealed"})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    rotated = client.post("/webhook/rotate-secret")
    assert rotated.status_code == 200
    secret = rotated.json()["secret"]

    [row] = [r for r in endpoint_rows(manager.database_url) if r["id"] == created.json()["id"]]
    stored = json.dumps(row, default=str)
    assert "whsec_" not in stored and secret.removeprefix("whsec_") not in stored
    assert SecretBox([KEY_1]).open_text(row["secret_sealed"]) == secret

    stopped_bot(client)
    wait_until(lambda: len(receiver.got()) >= 1, timeout=30, what="a delivery")
    verify(secret, receiver.got()[0]["headers"], receiver.got()[0]["body"])

    # Rotation: new key first, re-seal, then the old key can go.
    rotate = subprocess.run(
        [sys.executable, "-m", "botfleet.manager", "rotate-secrets"],
        env=user_env(
            BOTFLEET_DATABASE_URL=manager.database_url,
            BOTFLEET_DATA_DIR=str(manager.data_dir),
            BOTFLEET_SECRETS_KEYS=f"{KEY_2},{KEY_1}",
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotate.returncode == 0, rotate.stderr
    assert "webhook endpoints" in rotate.stdout + rotate.stderr
    [row] = [r for r in endpoint_rows(manager.database_url) if r["id"] == created.json()["id"]]
    assert SecretBox([KEY_2]).open_text(row["secret_sealed"]) == secret, "sealed with the new key"

    manager.stop()
    manager.extra_env["BOTFLEET_SECRETS_KEYS"] = KEY_2  # the old key dropped
    manager.start()
    stopped_bot(client)
    wait_until(lambda: len(receiver.got()) >= 2, timeout=30, what="a delivery after rotation")
    verify(secret, receiver.got()[1]["headers"], receiver.got()[1]["body"])
