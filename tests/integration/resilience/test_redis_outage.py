"""Redis only wakes bots up: with Redis down, stop and reconfigure still work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Manager, RedisServer, running_manager, wait_for_command, wait_for_status


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[Manager, RedisServer]]:
    """A manager with a Redis of its own, which the test stops and starts."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with running_manager(tmp_path, redis_server.url) as instance:
            yield instance, redis_server
    finally:
        redis_server.stop()


def test_stop_and_reconfigure_work_while_redis_is_down(
    outage: tuple[Manager, RedisServer],
) -> None:
    manager, redis_server = outage
    _, client = manager.new_user()
    first = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    second = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    wait_for_status(client, first, {"active"})
    wait_for_status(client, second, {"active"})

    redis_server.stop()
    ready = httpx.get(f"{manager.url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"

    stop = client.post(f"/bots/{first}/stop")
    assert stop.status_code == 202, stop.text
    assert stop.json()["status"] == "stopping", "the stop is recorded at once"
    done = wait_for_status(client, first, {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["exit_code"] == 0

    change = client.patch(f"/bots/{second}/config", json={"config": {"during": "outage"}})
    assert change.status_code == 202, change.text
    assert change.json()["status"] == "pending"
    # The bot reads its pending commands over HTTP while its channel is down.
    acked = wait_for_command(client, second, change.json()["id"], {"acked", "failed"}, timeout=60)
    assert acked["status"] == "acked"
    assert client.get(f"/bots/{second}").json()["config"] == {"during": "outage"}

    redis_server.start()
    assert client.post(f"/bots/{second}/stop").status_code == 202
    assert wait_for_status(client, second, {"completed", "failed"})["status"] == "completed"
