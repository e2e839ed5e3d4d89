"""The CLI's two ways of speaking HTTP answer alike (botfleet.cli.transport): the standard
library's http.client on a direct connection, httpx otherwise (a proxy, …). Each test runs
against a local stand-in server through both, and checks what the client makes of it: the
request the server sees, errors and their exit reasons, timeouts, a stream's lines and events,
a connection the server dropped while idle, and https verified against the trusted
certificates (SSL_CERT_FILE)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from botfleet.cli import transport
from botfleet.cli.api import ApiClient, ApiError, Unreachable
from botfleet.cli.httpx_client import HttpxClient

#: Log lines cut at awkward places: a \r before its \n, a character's UTF-8 bytes, no last \n.
LOG_CHUNKS = [b"one\r", b"\ntwo\n", b"thr", b"ee\r\n", b"caf\xc3", b"\xa9\n\n", b"last"]
LOG_LINES = ["one", "two", "three", "café", "", "last"]
EVENTS = b'id: 1\nevent: transition\ndata: {"a": 1}\n\n: keep-alive\n\nid: 2\ndata: x\n\n'


class StandIn(BaseHTTPRequestHandler):
    """What the tests ask for, by path; every request is kept as (method, path, query, body)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, list[tuple[str, str]], Any]] = []
    connections: set[tuple[str, int]] = set()

    def log_message(self, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunked(self, kind: str, chunks: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.01)  # each its own read
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def handle_one(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        StandIn.seen.append((method, parts.path, parse_qsl(parts.query), body))
        StandIn.connections.add(self.client_address)
        if parts.path == "/echo":
            self.answer(200, json.dumps({"type": self.headers.get("Content-Type")}).encode())
        elif parts.path == "/missing":
            self.answer(404, b'{"detail": {"code": "bot_not_found", "message": "no such bot"}}')
        elif parts.path == "/gateway":
            self.answer(502, b"  <h1>upstream down</h1>\n", "text/html")
        elif parts.path == "/silent-error":
            self.answer(503, b"")
        elif parts.path == "/slow":
            time.sleep(2)
            self.answer(200, b"{}")
        elif parts.path == "/drop":  # keep-alive said, then closed once idle
            self.answer(200, b'{"dropped": true}')
            self.close_connection = True
        elif parts.path.endswith("/logs"):
            self.chunked("text/plain; charset=utf-8", LOG_CHUNKS)
        elif parts.path == "/events":
            self.chunked("text/event-stream", [EVENTS[:20], EVENTS[20:50], EVENTS[50:]])
        else:
            self.answer(200, b'{"items": [], "next_cursor": null}')

    def do_GET(self) -> None:
        self.handle_one("GET")

    def do_POST(self) -> None:
        self.handle_one("POST")

    def do_DELETE(self) -> None:
        self.handle_one("DELETE")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping in /slow is not waited for


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The stand-in's base URL (plain http)."""
    with serving() as url:
        yield url


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    httpd = Server(("127.0.0.1", 0), StandIn)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(params=["http.client", "httpx"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test through both transports; the proxy variables of the environment unset."""
    for name in transport.PROXIES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(transport, "USE_HTTPX", request.param == "httpx")
    StandIn.seen.clear()
    StandIn.connections.clear()
    return str(request.param)


def test_the_server_sees_the_same_request(server: str, way: str) -> None:
    with ApiClient(server, "bf_key") as client:
        assert isinstance(client.http, HttpxClient) == (way == "httpx")
        answer = client._json("POST", "/echo", json={"name": "é", "n": [1, 2]})
        assert answer == {"type": "application/json"}
        labels = [("team", "sales ops"), ("k", "a:b/c?&=")]
        client.list_bots(status=["active"], labels=labels, limit=5, id_part="abcd")
        client.delete_bot("some id", purge_state=True)
    assert StandIn.seen == [
        ("POST", "/echo", [], {"name": "é", "n": [1, 2]}),
        (
            "GET",
            "/bots",
            [
                ("status", "active"),
                ("label", "team:sales ops"),
                ("label", "k:a:b/c?&="),
                ("limit", "5"),
                ("id", "abcd"),
            ],
            None,
        ),
        ("DELETE", "/bots/some%20id", [("purge_state", "1")], None),
    ]
    assert len(StandIn.connections) == 1  # one kept-alive connection for all three


def test_refusals_and_failures_read_alike(server: str, way: str) -> None:
    with ApiClient(server, "bf_key") as client:
        with pytest.raises(ApiError) as refused:
            client._json("GET", "/missing")
        assert (refused.value.status, refused.value.code) == (404, "bot_not_found")
        assert refused.value.message == "no such bot"
        with pytest.raises(ApiError) as gateway:
            client._json("GET", "/gateway")
        assert (gateway.value.code, gateway.value.message) == ("http_502", "<h1>upstream down</h1>")
        with pytest.raises(ApiError) as silent:
            client._json("GET", "/silent-error")
        assert (silent.value.code, silent.value.message) == ("http_503", "Service Unavailable")
    with ApiClient(server, "bf_key", timeout=0.3) as client, pytest.raises(Unreachable) as slow:
        client._json("GET", "/slow")
    assert slow.value.reason == "timed out"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    with ApiClient(closed, "bf_key") as client, pytest.raises(Unreachable) as down:
        client.list_bots()
    assert (down.value.url, down.value.reason) == (closed, "connection refused")


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: str, way: str) -> None:
    with ApiClient(server, "bf_key") as client:
        assert client._json("GET", "/drop") == {"dropped": True}
        time.sleep(0.2)  # the server has closed it by now
        assert client.list_bots()["items"] == []
    assert len(StandIn.connections) == 2


def test_streams_give_the_same_lines_and_events(server: str, way: str) -> None:
    with ApiClient(server, "bf_key") as client:
        assert list(client.follow_logs("b1", tail=5)) == LOG_LINES
        events = list(itertools.islice(client.events(), 2))
    assert [(e.id, e.event, e.data) for e in events] == [
        ("1", "transition", '{"a": 1}'),
        ("2", "message", "x"),
    ]
    assert StandIn.seen[0][1:3] == ("/bots/b1/logs", [("tail", "5"), ("follow", "1")])


def test_https_trusts_the_same_certificates(tmp_path: Path, way: str, monkeypatch) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with serving(tls) as url:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with ApiClient(url, "bf_key") as client, pytest.raises(Unreachable) as untrusted:
            client.list_bots()
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.value.reason
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with ApiClient(url, "bf_key") as client:
            assert client.list_bots()["items"] == []


def test_what_goes_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment, credentials in the URL, a host that is not ASCII."""
    for name in transport.PROXIES:
        monkeypatch.delenv(name, raising=False)
    direct = transport.client_for("https://botfleet.example", {}, 5)
    assert isinstance(direct, transport.PlainClient)
    for url in ("http://user:secret@botfleet.example", "http://bötfleet.example"):
        assert isinstance(transport.client_for(url, {}, 5), HttpxClient), url
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert isinstance(transport.client_for("https://botfleet.example", {}, 5), HttpxClient)
