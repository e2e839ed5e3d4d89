"""The runtime loads only what a bot uses, so each bot process stays small (issue 16).

A running demo bot must not hold an HTTP library's full client (httpx, httpcore, anyio, h11,
idna, email, certifi, rich/click), redis-py's whole client, other built-in bots, or OpenSSL's
digests before a command needs them; and its RSS must stay near a bare interpreter's. The small
HTTP and Redis clients that replace httpx and redis-py are exercised here against a real
redis-server with per-bot ACL users and against servers that close idle connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from botfleet.runtime.http import HttpClient, TransportError
from botfleet.runtime.loader import load_bot_class
from botfleet.runtime.protocol import CommandMessage, command_channel, signed_json, signing_key
from botfleet.runtime.redis_sub import RedisError, Subscription
from tests.support import REPO, RedisServer, wait_until

BOT_ID = "b-imports"
TOKEN = "imports-token"
#: Modules a demo bot on an http:// callback URL never needs.
HEAVY = (
    "httpx", "httpcore", "anyio", "h11", "h2", "idna", "certifi", "email", "http.cookies",
    "rich", "click", "pygments", "redis", "opentelemetry", "cryptography",
)  # fmt: skip


class _Manager(BaseHTTPRequestHandler):
    """Accepts every callback; answers pending reads with an empty page."""

    events: list[dict[str, Any]]
    acks: list[str]

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: bytes = b"{}") -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(b'{"items": [], "next_cursor": null}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if self.path.endswith("/ack"):
            self.acks.append(self.path.split("/")[-2])
        else:
            self.events.append(body)
        self._answer()


@pytest.fixture
def manager() -> Iterator[tuple[str, type[_Manager]]]:
    handler = type("Handler", (_Manager,), {"events": [], "acks": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# Runs the runtime as `python -m botfleet.runtime` would, then writes the loaded modules on exit.
_PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("botfleet.runtime", run_name="__main__", alter_sys=True)
"""


def _start_demo(callback_url: str, redis_url: str, out: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ["PATH"],
        "BOTFLEET_BOT_ID": BOT_ID,
        "BOTFLEET_BOT_TOKEN": TOKEN,
        "BOTFLEET_CALLBACK_URL": callback_url,
        "BOTFLEET_REDIS_URL": redis_url,
        "BOTFLEET_BOT": "demo",
        "BOTFLEET_BOT_CONFIG": "{}",
        "BOTFLEET_HEARTBEAT_S": "0.3",
    }
    return subprocess.Popen(
        [sys.executable, "-c", _PROBE, str(out)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_demo_bot_loads_only_what_it_uses_and_stays_small(
    manager: tuple[str, type[_Manager]], redis_server: RedisServer, tmp_path: Path
) -> None:
    url, handler = manager
    out = tmp_path / "modules.json"
    proc = _start_demo(url, redis_server.url, out)
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_until(lambda: [e["event"] for e in handler.events][:2] == ["started", "heartbeat"])
        # Subscribed and idle, as every bot spends its life: it says it listens, then beats on.
        assert proc.stderr is not None
        early = [proc.stderr.readline()]
        while b"listening for commands" not in early[-1]:
            assert early[-1], b"".join(early).decode()
            early.append(proc.stderr.readline())
        beats = len(handler.events)
        wait_until(lambda: len(handler.events) > beats, what="a heartbeat while subscribed")
        runtime_kib, bare_kib = _rss_kib(proc.pid), _rss_kib(bare.pid)
        # An idle bot that was sent no command never hashed anything yet.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        err = b"".join(early) + err
    finally:
        bare.kill()
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert [e["event"] for e in handler.events][-2:] == ["leaving", "exited"]
    modules = set(json.loads(out.read_text()))
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
    assert loaded == [], f"the runtime imported {loaded}"
    assert "botfleet.runtime.bots.demo" in modules, "the probe did not run the demo bot"
    assert "hashlib" not in modules and "hmac" not in modules
    # 42.9 MiB (4x) before issue 16; about 2x now. 2.5x leaves room for other Pythons' builds.
    assert runtime_kib < 2.5 * bare_kib, (runtime_kib, bare_kib)


def test_a_signed_command_still_arrives_and_a_forged_one_does_not(
    manager: tuple[str, type[_Manager]], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The lazy hashing must not weaken the signature check: the forged command is dropped,
    the signed one applied and acked, over the real Redis the manager publishes on."""
    url, handler = manager
    proc = _start_demo(url, redis_server.url, tmp_path / "modules.json")
    publisher = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: publisher.pubsub_numsub(command_channel(BOT_ID))[0][1] == 1)
        channel = command_channel(BOT_ID)
        forged = CommandMessage(id="forged", action="leave", issued_at="now")
        publisher.publish(channel, signed_json(forged, signing_key("another bot's token")))
        real = CommandMessage(id="c1", action="leave", issued_at="now")
        publisher.publish(channel, signed_json(real, signing_key(TOKEN)))
        _, err = proc.communicate(timeout=30)
    finally:
        publisher.close()
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert handler.acks == ["c1"]
    assert b"missing or wrong signature" in err


def test_the_loader_imports_only_the_bot_it_is_asked_for() -> None:
    code = (
        "import sys; from botfleet.runtime.loader import load_bot_class as load;"
        "load('botfleet.runtime.bot:Bot'); print('botfleet.runtime.bots.demo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    assert load_bot_class("demo").__name__ == "DemoBot"


# --- the HTTP client ------------------------------------------------------------------------


def _raw_server(answers: list[bytes], close_after_each: bool) -> tuple[int, list[bytes]]:
    """A socket server that sends canned answers in order; records each request head."""
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        pending = list(answers)
        while pending:
            conn, _ = listener.accept()
            with conn:
                while pending:
                    data = conn.recv(65536)
                    if not data:
                        break
                    seen.append(data)
                    conn.sendall(pending.pop(0))
                    if close_after_each:
                        break
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], seen


def test_http_client_reads_chunked_answers_and_reconnects_after_an_idle_close() -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n4\r\n: 1}\r\n0\r\n\r\n'
    )
    plain = b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\nno"
    # The server closes each connection after answering (as an expired keep-alive does):
    # the second request must go out on a new connection, not fail.
    port, seen = _raw_server([chunked, plain], close_after_each=True)

    async def go() -> tuple[Any, int]:
        client = HttpClient(base_url=f"http://127.0.0.1:{port}", headers={}, timeout_s=5)
        try:
            first = (await client.request("GET", "/x", params={"pending": 1})).json()
            await asyncio.sleep(0.1)
            second = await client.request("POST", "/y z", json={"k": "v"})
            return first, second.status_code
        finally:
            await client.aclose()

    assert asyncio.run(go()) == ({"a": 1}, 409)
    assert seen[0].startswith(b"GET /x?pending=1 HTTP/1.1\r\n")
    assert seen[1].startswith(b"POST /y%20z HTTP/1.1\r\n"), "a space must not split the line"
    assert seen[1].endswith(b'\r\n\r\n{"k":"v"}')


def test_http_client_turns_a_refused_connection_into_a_transport_error(refused_url: str) -> None:
    async def go() -> None:
        client = HttpClient(base_url=refused_url, headers={}, timeout_s=2)
        await client.request("GET", "/")

    with pytest.raises(TransportError):
        asyncio.run(go())


# --- the Redis subscriber -------------------------------------------------------------------


def test_subscriber_authenticates_as_the_bot_and_cannot_follow_another_channel(
    redis_server: RedisServer,
) -> None:
    """A bot's ACL user may subscribe to its own channel only: the subscriber reports Redis'
    refusal of another bot's channel instead of listening to it."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", "bot-a", "on", ">pw-a", "resetchannels", "&bot_commands:a",
        "-@all", "+subscribe", "+unsubscribe", "+ping",
    )  # fmt: skip
    own = f"redis://bot-a:pw-a@127.0.0.1:{redis_server.port}/0"

    async def listen() -> Any:
        async with Subscription(own, health_check_s=5) as sub:
            await sub.subscribe("bot_commands:a")
            admin.publish("bot_commands:a", b"hello")
            for _ in range(5):
                if (message := await sub.get_message(timeout=2)) is not None:
                    return message["data"]
        return None

    async def intrude() -> None:
        async with Subscription(own, health_check_s=5) as sub:
            await sub.subscribe("bot_commands:b")

    async def wrong_password() -> None:
        async with Subscription(own.replace("pw-a", "nope"), health_check_s=5):
            pass

    try:
        assert asyncio.run(listen()) == b"hello"
        with pytest.raises(RedisError, match="NOPERM"):
            asyncio.run(intrude())
        with pytest.raises(RedisError, match="WRONGPASS"):
            asyncio.run(wrong_password())
    finally:
        admin.close()
