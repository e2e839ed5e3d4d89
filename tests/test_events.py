"""`GET /events`: the live stream of transitions and command status changes (SSE)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_TOKEN, Manager, RedisServer, running_manager, wait_for_status

Event = tuple[int, str, dict[str, Any]]


class Listener:
    """Reads an SSE stream in a thread; events land in a queue."""

    def __init__(self, url: str, token: str, last_event_id: int | None = None) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", f"{url}/events", headers=headers), stream=True
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self._response.iter_lines():
                if not line:
                    if "data" in fields:
                        self.events.put(
                            (int(fields["id"]), fields["event"], json.loads(fields["data"]))
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value
        except httpx.HTTPError:
            pass

    def until(self, predicate: Any, timeout: float = 30) -> list[Event]:
        seen: list[Event] = []
        while True:
            event = self.events.get(timeout=timeout)
            seen.append(event)
            if predicate(event):
                return seen

    def close(self) -> None:
        self._response.close()
        self._client.close()


def is_transition_to(bot_id: str, status: str) -> Any:
    return lambda e: e[1] == "transition" and e[2]["bot_id"] == bot_id and e[2]["to"] == status


def test_a_bots_life_streams_in_order_and_resumes(manager: Manager) -> None:
    _, client = manager.new_user()
    key = client.headers["Authorization"].split(" ", 1)[1]
    listener = Listener(manager.url, key)
    try:
        bot = client.post("/bots", json={"bot": "demo"}).json()
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
        mine = bob.post("/bots", json={"bot": "demo", "start_at": "2099-01-01T00:00:00Z"}).json()
        theirs = alice.post("/bots", json={"bot": "demo", "start_at": "2099-01-01T00:00:00Z"})
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
        bot = client.post("/bots", json={"bot": "demo"}).json()  # served by the first replica
        listener.until(is_transition_to(bot["id"], "active"))
        wait_for_status(client, bot["id"], {"active"})
        client.post(f"/bots/{bot['id']}/stop")
        listener.until(is_transition_to(bot["id"], "completed"))
    finally:
        listener.close()
