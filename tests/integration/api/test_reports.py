"""Reports from bots end to end (issue 18, item 4): a bot's `await self.report({...})` becomes
its `report` and `reported_at` on GET /bots/{id}, an SSE `report` event and a `bot.report`
webhook; a chatty bot is coalesced (latest wins), so it cannot flood the database. Real bot
processes, manager, Redis and database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.listeners import Listener, Receiver
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
    wait_until,
)

INTERVAL_S = 2.0
MANAGER_ENV = {
    **SPY_RUNTIME_ENV,  # tests act as a bot with its own token
    "BOTFLEET_REPORT_MIN_INTERVAL_S": str(INTERVAL_S),
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("reports")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.close()


def live_demo(client: httpx.Client, **config: Any) -> dict[str, Any]:
    response = client.post("/bots", json={"bot": "demo", "config": config})
    assert response.status_code == 201, response.text
    return wait_for_status(client, response.json()["id"], {"active"})


def report(manager: Manager, bot_id: str, token: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{manager.callback_url}/internal/bots/{bot_id}/callbacks",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_a_bots_report_reaches_the_api_the_stream_and_webhooks(
    manager: Manager, receiver: Receiver
) -> None:
    user, client = manager.new_user()
    assert client.put("/webhook", json={"url": receiver.url("/hook")}).status_code == 201
    listener = Listener(manager.url, user["api_key"])
    try:
        bot = live_demo(client, report_every_s=0.5)

        reported = wait_until(
            lambda: (b := client.get(f"/bots/{bot['id']}").json())["report"] and b,
            timeout=15,
            what="the demo bot's first report",
        )
        assert reported["report"]["n"] >= 1 and reported["reported_at"]

        seen = listener.until(lambda e: e[1] == "report" and e[2]["bot_id"] == bot["id"])
        data = seen[-1][2]
        assert data["report"]["n"] >= 1 and data["reported_at"]

        def report_hooks() -> list[dict[str, Any]]:
            bodies = [json.loads(r["body"]) for r in receiver.got("/hook")]
            return [b for b in bodies if b["type"] == "bot.report"]

        hooks = wait_until(report_hooks, timeout=15, what="a bot.report webhook")
        assert hooks[0]["data"]["bot_id"] == bot["id"] and hooks[0]["data"]["report"]["n"] >= 1
        assert all(b["type"] in ("bot.transition", "bot.report") for b in report_hooks())
    finally:
        listener.close()
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})


def test_a_chatty_bot_is_coalesced_and_the_latest_wins(manager: Manager) -> None:
    user, client = manager.new_user()
    bot = live_demo(client)
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    listener = Listener(manager.url, user["api_key"])
    try:
        first = report(manager, bot["id"], token, {"event": "report", "data": {"n": 1}})
        assert first.status_code == 200, first.text
        # The first report after a quiet interval is written at once.
        assert client.get(f"/bots/{bot['id']}").json()["report"] == {"n": 1}
        sent_at = time.monotonic()
        for n in range(2, 41):  # 39 more, far faster than one per interval
            answer = report(manager, bot["id"], token, {"event": "report", "data": {"n": n}})
            assert answer.status_code == 200, answer.text
        sending_s = time.monotonic() - sent_at
        # Within the interval nothing more was written...
        if time.monotonic() - sent_at < INTERVAL_S * 0.75:
            assert client.get(f"/bots/{bot['id']}").json()["report"] == {"n": 1}
        # ...and once it is over the latest report is, within about one interval.
        latest = wait_until(
            lambda: (b := client.get(f"/bots/{bot['id']}").json())["report"] == {"n": 40} and b,
            timeout=INTERVAL_S + 3,
            what="the coalesced latest report",
        )
        assert time.monotonic() - sent_at < INTERVAL_S + 2.5
        assert latest["reported_at"]

        reports = [
            e[2]["report"]["n"]
            for e in listener.until(lambda e: e[1] == "report" and e[2]["report"] == {"n": 40})
            if e[1] == "report"
        ]
        # Two writes, the first and the latest; a busy host that took longer than an interval to
        # send the 39 saw one more write per interval passed meanwhile, never one per report.
        allowed = 2 + int(sending_s / INTERVAL_S)
        assert reports[0] == 1 and reports[-1] == 40 and reports == sorted(reports), reports
        assert len(reports) <= allowed, f"{reports}: at most {allowed} writes in {sending_s:.1f} s"
    finally:
        listener.close()


def test_bad_reports_are_refused_and_change_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = live_demo(client)
    other = live_demo(client)
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    other_token = runtime_env(other["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    assert (
        report(manager, bot["id"], token, {"event": "report", "data": {"ok": 1}}).status_code == 200
    )
    cases = [
        {"event": "report"},  # no data
        {"event": "report", "data": [1, 2]},
        {"event": "report", "data": "text"},
        {"event": "report", "data": {"blob": "x" * (16 * 1024)}},  # over 16 KiB
        {"event": "started", "data": {"n": 1}},  # data only with a report
    ]
    for body in cases:
        answer = report(manager, bot["id"], token, body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"]["code"]
    # Another bot's token on this bot's path: 403, and the report is not this bot's.
    foreign = report(manager, bot["id"], other_token, {"event": "report", "data": {"evil": 1}})
    assert foreign.status_code == 403, foreign.text
    bad_token = report(manager, bot["id"], "bt_nope", {"event": "report", "data": {"evil": 1}})
    assert bad_token.status_code == 401, bad_token.text
    manager.loop_runs("reports")  # a coalesced write, had one been kept, has landed
    assert client.get(f"/bots/{bot['id']}").json()["report"] == {"ok": 1}
    assert client.get(f"/bots/{other['id']}").json()["report"] is None

    # A report of an ended bot changes nothing (its token died with it).
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})
    late = report(manager, bot["id"], token, {"event": "report", "data": {"late": 1}})
    assert late.status_code == 401, late.text
    assert client.get(f"/bots/{bot['id']}").json()["report"] == {"ok": 1}
