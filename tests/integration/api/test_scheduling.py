"""Scheduling: `start_at` launches a bot at its time, a start missed by too much fails, and
`max_duration_s` stops a bot when due; both survive a manager restart (they live in the
database, not in a timer)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import Manager, RedisServer, running_manager, transitions, wait_for_status


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    env = {"BOTFLEET_SCHEDULE_MISS_S": "30"}
    with running_manager(tmp_path_factory.mktemp("sched"), redis_server.url, extra_env=env) as m:
        yield m


def test_start_at_launches_on_time_even_across_a_restart(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": at(4)}).json()
    manager.stop()
    manager.start()
    seen = client.get(f"/bots/{bot['id']}").json()["status"]
    if datetime.now(UTC) < datetime.fromisoformat(bot["start_at"]):  # seen before its time
        assert seen == "requested"  # (a slow restart outlives the 4 s: the timers launch it)
    active = wait_for_status(client, bot["id"], {"active"}, timeout=30)
    started = datetime.fromisoformat(active["started_at"])
    assert started >= datetime.fromisoformat(bot["start_at"]), "never before its time"
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed"})


def test_a_start_missed_by_too_much_fails(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": at(-120)}).json()
    done = wait_for_status(client, bot["id"], {"failed", "active"})
    assert (done["status"], done["status_reason"]) == ("failed", "schedule_missed")
    assert transitions(client, bot["id"])[-1][3] == "scheduler"


def test_max_duration_stops_the_bot(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "max_duration_s": 2}).json()
    wait_for_status(client, bot["id"], {"active"})
    done = wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed"
    stop = [t for t in transitions(client, bot["id"]) if t[1] == "stopping"]
    assert stop == [("active", "stopping", "max_duration", "scheduler")]
