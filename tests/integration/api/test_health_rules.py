"""Health rules end to end (issue 30, item 5): one manager, real demo bots, the loop at the
timers' interval. A bot reporting `connected: false` for a second is restarted (attempt 2,
reason `health_rule`, the rule in the detail); a kind's silence rule stops the bots that name
none; an `every_s` rule restarts a bot periodically; a bot whose rules never hold is left
alone. The rules show on the API, the bot's page and the kind's page; bad rules are 422."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.support import (
    ADMIN_TOKEN,
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
    wait_until,
)
from tests.ui_browser import ui_client

DEMO_CLASS = "botfleet.runtime.bots.demo:DemoBot"
MANAGER_ENV = {
    **SPY_RUNTIME_ENV,  # the test reports as one of its bots, with that bot's token
    "BOTFLEET_REPORT_MIN_INTERVAL_S": "0.2",  # rules wait at least this window (plus a flush)
}
DISCONNECTED = {"when": {"report": "connected", "equals": False, "for_s": 1}, "then": "restart"}
QUIET = {"when": {"no_report_for_s": 2}, "then": "stop"}
PERIODIC = {"when": {"every_s": 2}, "then": "restart"}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("health-rules")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def start(client: httpx.Client, bot: str = "demo", **body: Any) -> dict[str, Any]:
    answer = client.post("/bots", json={"bot": bot, "config": {}, **body})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def fired(client: httpx.Client, bot_id: str) -> list[dict[str, Any]]:
    rows = client.get(f"/bots/{bot_id}/transitions").json()["items"]
    return [r for r in rows if r["reason"] == "health_rule"]


def report(manager: Manager, bot: dict[str, Any], data: dict[str, Any]) -> None:
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    answer = httpx.post(
        f"{manager.callback_url}/internal/bots/{bot['id']}/callbacks",
        json={"event": "report", "data": data},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def test_rules_fire_on_a_report_on_silence_and_on_time_and_only_then(manager: Manager) -> None:
    user, client = manager.new_user()
    kind = f"quiet-{uuid.uuid4().hex[:6]}"
    with manager.admin() as admin:
        made = admin.post(
            "/admin/kinds", json={"name": kind, "run": {"python": DEMO_CLASS}, "health": [QUIET]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["health"] == [QUIET]
    # Never holds: it reports `n` twice a second, and `n` is never -1.
    steady_rules = [
        {"when": {"report": "n", "equals": -1, "for_s": 1}, "then": "stop"},
        {"when": {"no_report_for_s": 2}, "then": "stop"},
    ]
    flaky = start(client, health=[DISCONNECTED])
    silent = start(client, bot=kind)  # names no rules: gets its kind's
    periodic = start(client, health=[PERIODIC])
    steady = start(client, config={"report_every_s": 0.5}, health=steady_rules)
    assert flaky["health"] == [DISCONNECTED] and silent["health"] == [QUIET]
    assert steady["health"] == steady_rules

    flaky = wait_for_status(client, flaky["id"], {"active"})
    report(manager, flaky, {"connected": True})
    report(manager, flaky, {"connected": False})
    moves = wait_until(lambda: fired(client, flaky["id"]), timeout=20, what="the report rule")
    assert [(m["from"], m["to"], m["source"], m["actor"], m["attempt"]) for m in moves] == [
        ("active", "starting", "reconciler", "reconciler", 2)
    ]
    assert moves[0]["detail"].startswith("health rule 1: report connected == false for 1 s")
    again = wait_for_status(client, flaky["id"], {"active"})
    assert again["attempt"] == 2 and again["runtime_ref"] != flaky["runtime_ref"]

    ended = wait_for_status(client, silent["id"], {"completed", "failed"}, timeout=30)
    assert ended["status"] == "completed" and ended["attempt"] == 1
    assert [(m["from"], m["to"], m["detail"]) for m in fired(client, silent["id"])] == [
        ("active", "stopping", "health rule 1: no report for 2 s")
    ]

    twice = wait_until(
        lambda: len(moves := fired(client, periodic["id"])) >= 2 and moves,
        timeout=30,
        what="two periodic restarts",
    )
    assert [m["attempt"] for m in twice[:2]] == [2, 3]
    assert all(m["detail"].startswith("health rule 1: every 2 s") for m in twice)

    # The steady bot's 8th report: it has run twice as long as any of its rules waits.
    still = wait_until(
        lambda: (
            ((b := client.get(f"/bots/{steady['id']}").json())["report"] or {}).get("n", 0) >= 8
            and b
        ),
        timeout=30,
        what="the steady bot's 8th report",
    )
    assert still["status"] == "active" and still["attempt"] == 1, still
    assert fired(client, steady["id"]) == []

    # The bot's page and the kind's page show the rules; a relaunch keeps them.
    page, _ = ui_client(manager.url, user["api_key"])
    with closing(page):
        shown = page.get(f"/ui/bots/{flaky['id']}").text
        assert "report connected == false for 1 s → restart" in shown
    admin_page, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(admin_page):
        kind_page = html.unescape(admin_page.get(f"/ui/admin/kinds/{kind}").text)
        assert '"no_report_for_s": 2' in kind_page
    relaunched = client.post(f"/bots/{silent['id']}/relaunch")
    assert relaunched.status_code == 201, relaunched.text
    assert relaunched.json()["health"] == [QUIET]
    for bot in (flaky, periodic, steady, relaunched.json()):
        assert client.post(f"/bots/{bot['id']}/stop").status_code == 202


BAD = [
    ([{"when": {"every_s": 0}, "then": "restart"}], "health.0.when.every_s.every_s"),
    ([{"when": {"every_s": 5, "no_report_for_s": 5}, "then": "stop"}], "exactly one of"),
    ([{"when": {"report": "x", "for_s": 5}, "then": "stop"}], "equals"),
    ([{"when": {"every_s": 5}, "then": "reboot"}], "health.0.then"),
    ([PERIODIC] * 11, "at most 10"),
    ({"when": {"every_s": 5}, "then": "stop"}, "health"),  # a rule, not a list of rules
]


def test_malformed_rules_are_refused_and_start_nothing(manager: Manager) -> None:
    _, client = manager.new_user()
    for health, named in BAD:
        answer = client.post("/bots", json={"bot": "demo", "config": {}, "health": health})
        assert answer.status_code == 422, (health, answer.text)
        detail = answer.json()["detail"]
        assert detail["code"] == "invalid_input" and named in detail["message"], detail
    assert client.get("/bots").json()["items"] == []
    with manager.admin() as admin:
        bad_kind = {"name": "bad-rules", "run": {"python": DEMO_CLASS}, "health": BAD[0][0]}
        answer = admin.post("/admin/kinds", json=bad_kind)
        assert answer.status_code == 422 and answer.json()["detail"]["code"] == "invalid_input"
