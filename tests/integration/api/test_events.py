"""`GET /events`: the live stream of transitions and command status changes (SSE)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.listeners import Listener
from tests.support import (
    ADMIN_TOKEN,
    Manager,
    RedisServer,
    running_manager,
    wait_for_status,
    wait_until,
)

DEMO = {"bot": "demo", "config": {}}
LATER = {**DEMO, "start_at": "2099-01-01T00:00:00Z"}  # waits, requested, until stopped


def is_transition_to(bot_id: str, status: str) -> Any:
    return lambda e: e[1] == "transition" and e[2]["bot_id"] == bot_id and e[2]["to"] == status


def test_a_bots_life_streams_in_order_and_resumes(manager: Manager) -> None:
    _, client = manager.new_user()
    key = client.headers["Authorization"].split(" ", 1)[1]
    listener = Listener(manager.url, key)
    try:
        bot = client.post("/bots", json=DEMO).json()
        seen = listener.until(is_transition_to(bot["id"], "active"))
        command = client.patch(f"/bots/{bot['id']}/config", json={"config": {"a": 1}}).json()
        seen += listener.until(lambda e: e[1] == "command" and e[2]["status"] == "acked")
        client.post(f"/bots/{bot['id']}/stop")
        seen += listener.until(is_transition_to(bot["id"], "completed"))
    finally:
        listener.close()
    ids = [e[0] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids only grow"
    moves = [(e[2]["from"], e[2]["to"]) for e in seen if e[1] == "transition"]
    assert moves == [
        ("requested", "starting"),
        ("starting", "active"),
        ("active", "stopping"),
        ("stopping", "completed"),
    ]
    statuses = [
        e[2]["status"] for e in seen if e[1] == "command" and e[2]["command_id"] == command["id"]
    ]
    assert statuses[0] == "pending" and statuses[-1] == "acked"

    # Resume after the first event: everything after it comes again, nothing before.
    again = Listener(manager.url, key, last_event_id=ids[0])
    try:
        replay = again.until(lambda e: e[0] == ids[-1])
    finally:
        again.close()
    assert [e[0] for e in replay] == ids[1:]


def test_users_see_only_their_bots_and_the_admin_sees_all(manager: Manager) -> None:
    _, alice = manager.new_user()
    _, bob = manager.new_user()
    bob_listener = Listener(manager.url, bob.headers["Authorization"].split(" ", 1)[1])
    admin_listener = Listener(manager.url, ADMIN_TOKEN)
    try:
        mine = bob.post("/bots", json=LATER).json()
        theirs = alice.post("/bots", json=LATER)
        alice.post(f"/bots/{theirs.json()['id']}/stop")
        bob.post(f"/bots/{mine['id']}/stop")
        seen = bob_listener.until(is_transition_to(mine["id"], "completed"))
        assert {e[2]["bot_id"] for e in seen} == {mine["id"]}
        admin_seen = admin_listener.until(is_transition_to(mine["id"], "completed"))
        assert theirs.json()["id"] in {e[2]["bot_id"] for e in admin_seen}
    finally:
        bob_listener.close()
        admin_listener.close()
    response = httpx.get(f"{manager.url}/events", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


@pytest.fixture
def two_replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Manager, Manager]]:
    with running_manager(tmp_path, redis_server.url) as first:
        second = Manager(
            data_dir=first.data_dir, database_url=first.database_url, redis_url=redis_server.url
        )
        second.start()
        try:
            yield first, second
        finally:
            second.stop()


def test_events_cross_replicas(two_replicas: tuple[Manager, Manager]) -> None:
    first, second = two_replicas
    _, client = first.new_user()
    listener = Listener(second.url, client.headers["Authorization"].split(" ", 1)[1])
    try:
        bot = client.post("/bots", json=DEMO).json()  # served by the first replica
        listener.until(is_transition_to(bot["id"], "active"))
        wait_for_status(client, bot["id"], {"active"})
        client.post(f"/bots/{bot['id']}/stop")
        listener.until(is_transition_to(bot["id"], "completed"))
    finally:
        listener.close()


SEND_WARNING = "socket.send() raised exception"
MAX_STREAMS_PER_KEY = 5  # BOTFLEET_MAX_STREAMS_PER_KEY's default


def _every_stream_slot_free(url: str, key: str) -> bool:
    """Open as many streams as a key may hold at once (live only, no replay): all answer 200."""
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=None)) as client,
        contextlib.ExitStack() as opened,
    ):
        for _ in range(MAX_STREAMS_PER_KEY):
            request = client.build_request("GET", f"{url}/events", headers=headers)
            response = client.send(request, stream=True)
            opened.callback(response.close)
            if response.status_code != 200:
                return False
        return True


def test_a_client_that_drops_the_stream_mid_replay_leaves_the_log_quiet(manager: Manager) -> None:
    """A client that leaves during a long replay used to make the manager write on to the closed
    socket, logging asyncio's `socket.send() raised exception` 146-175 times per disconnect."""
    _, client = manager.new_user()
    key = client.headers["Authorization"].split(" ", 1)[1]
    bot_ids = []
    for _ in range(300):  # one event each (requested -> completed): a replay of about 60 KB
        bot = client.post("/bots", json=LATER)
        bot_ids.append(bot.json()["id"])
        assert client.post(f"/bots/{bot_ids[-1]}/stop").status_code == 202
    log_start = manager.log_path.stat().st_size

    request = f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    request += "Last-Event-ID: 0\r\n\r\n"
    for leave_after in (4_000, 16_000, 32_000):  # bytes read before leaving, all mid-replay
        with socket.create_connection(("127.0.0.1", manager.port), timeout=10) as sock:
            sock.sendall(request.encode())
            received = b""
            while len(received) < leave_after:
                data = sock.recv(4096)
                assert data, f"the stream ended after {len(received)} bytes"
                received += data
            assert received.startswith(b"HTTP/1.1 200"), received[:200]
            # Close with a reset, as a killed client or a dropped connection does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Each dropped stream holds one of the key's stream slots until its handler ends: once all
    # of them can be opened again, those handlers are over, and whatever they logged is logged.
    wait_until(lambda: _every_stream_slot_free(manager.url, key), what="the dropped streams' end")

    with manager.log_path.open("rb") as log:
        log.seek(log_start)
        flood = [line for line in log.read().decode().splitlines() if SEND_WARNING in line]
    assert flood == [], f"{len(flood)} lines of {SEND_WARNING!r} in the manager's log"

    # The manager still streams: the whole replay, in order, each event once.
    listener = Listener(manager.url, key, last_event_id=0)
    try:
        seen = listener.until(lambda e: e[2]["bot_id"] == bot_ids[-1])
    finally:
        listener.close()
    assert [e[2]["bot_id"] for e in seen] == bot_ids
    assert [e[2]["to"] for e in seen] == ["completed"] * len(bot_ids)
