"""Webhook subscriptions (issue 30, point 6): several endpoints per user, each sent only the
event types and labelled bots it asked for, with its custom headers (sealed, never shown back,
never logged); `command.result` once a command ends; the v2 `PUT /webhook` endpoint as one of
them; the dashboard's and the CLI's endpoints. One real manager posting to receivers on
127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from botfleet.cli import output
from botfleet.cli.main import app
from botfleet.manager.core.webhook_signing import verify
from tests.listeners import Receiver
from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    wait_for_command,
    wait_for_status,
    wait_until,
)
from tests.ui_browser import ui_client

MAX_ENDPOINTS = 4
MANAGER_ENV = {
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on loopback
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
    "BOTFLEET_WEBHOOK_MAX_ENDPOINTS": str(MAX_ENDPOINTS),
}
LATER = "2099-01-01T00:00:00Z"
HEADER_VALUE = "receiver-key-5f1c0a9e"  # a credential of the receiver's: never shown or logged


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("webhook-subscriptions")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def subscribe(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    answer = client.post("/webhooks", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def refused(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["detail"]["code"]


def cancelled_bot(client: httpx.Client, **fields: Any) -> str:
    """A bot scheduled for later, then stopped: one transition (requested → completed)."""
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER, **fields})
    assert bot.status_code == 201, bot.text
    assert client.post(f"/bots/{bot.json()['id']}/stop").status_code == 202
    return str(bot.json()["id"])


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in receiver.got(path)]


def queued(client: httpx.Client, endpoint_id: str) -> list[dict[str, Any]]:
    """The envelopes queued for the endpoint, oldest event first. Each endpoint's events are
    weighed in order: once a later one is here, an earlier one left out stays out."""
    page = client.get(f"/webhooks/{endpoint_id}/deliveries", params={"limit": 1000}).json()
    return [d["payload"] for d in reversed(page["items"])]


def test_each_endpoint_gets_only_its_types_and_labelled_bots(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    every_transition = subscribe(client, receiver.url("/transitions"), events=["bot.transition"])
    team = subscribe(
        client,
        receiver.url("/team"),
        name="team a",
        events=["bot.report", "command.result"],
        labels={"team": "a"},
        headers={"X-Receiver-Key": HEADER_VALUE},
    )
    endings = subscribe(
        client, receiver.url("/endings"), events=["bot.transition.completed"], labels={"team": "a"}
    )
    assert team["secret"].startswith("whsec_") and team["header_names"] == ["X-Receiver-Key"]
    assert (team["events"], team["labels"], team["breaker"]) == (
        ["bot.report", "command.result"],
        {"team": "a"},
        "closed",
    )

    other = cancelled_bot(client)  # no label: for `/transitions` only
    bot = client.post(
        "/bots",
        json={"bot": "demo", "config": {"report_every_s": 0.5}, "labels": {"team": "a"}},
    ).json()
    wait_for_status(client, bot["id"], {"active"})
    command = client.post(
        f"/bots/{bot['id']}/commands", json={"action": "echo", "payload": {"x": 1}}
    ).json()
    wait_for_command(client, bot["id"], command["id"], {"acked"})
    receiver.wait_for("/team", 2)
    wait_until(
        lambda: any(b["type"] == "command.result" for b in bodies(receiver, "/team")),
        what="the command's result",
    )
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})

    # Once the labelled bot's last transition arrived, the other bot's (earlier) was weighed.
    receiver.wait_for("/endings", 1)
    [ending] = queued(client, endings["id"])
    assert (ending["type"], ending["data"]["bot_id"], ending["data"]["to"]) == (
        "bot.transition",
        bot["id"],
        "completed",
    )
    wait_until(
        lambda: any(
            b["data"]["bot_id"] == bot["id"] and b["data"]["to"] == "completed"
            for b in bodies(receiver, "/transitions")
        ),
        what="every transition at /transitions",
    )
    transitions = queued(client, every_transition["id"])
    assert {b["type"] for b in transitions} == {"bot.transition"}
    assert {b["data"]["bot_id"] for b in transitions} == {other, bot["id"]}

    sent = receiver.got("/team")
    for request in sent:
        verify(team["secret"], request["headers"], request["body"])  # signed with its own
        assert request["headers"]["X-Receiver-Key"] == HEADER_VALUE
    got = queued(client, team["id"])
    assert {b["type"] for b in got} == {"bot.report", "command.result"}
    assert {b["data"]["bot_id"] for b in got} == {bot["id"]}
    [result] = [
        b["data"] for b in got if b["type"] == "command.result" and b["data"]["action"] == "echo"
    ]
    assert (result["command_id"], result["status"], result["result"]) == (
        command["id"],
        "acked",
        {"x": 1},
    )
    assert not [
        b
        for b in got
        if b["type"] == "command.result"
        and b["data"]["status"] not in {"acked", "failed", "expired"}
    ]

    # The header's value is in no answer and no log line.
    answers = [
        client.get("/webhooks").text,
        client.get(f"/webhooks/{team['id']}").text,
        client.patch(f"/webhooks/{team['id']}", json={"name": "team a (renamed)"}).text,
        client.get(f"/webhooks/{team['id']}/deliveries").text,
        client.get("/webhook/deliveries").text,
    ]
    assert not [a for a in answers if HEADER_VALUE in a]
    assert HEADER_VALUE not in manager.log_path.read_text()

    page = client.get(f"/webhooks/{team['id']}/deliveries", params={"status": "delivered"})
    assert {d["endpoint_id"] for d in page.json()["items"]} == {team["id"]}
    assert every_transition["id"] not in {d["endpoint_id"] for d in page.json()["items"]}
    assert endings["id"] != team["id"]


def test_filters_headers_and_the_limit_are_checked(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    url = receiver.url("/checked")
    for body, expected in [
        ({"events": ["bot.transitions"]}, (422, "unknown_event_type")),
        ({"events": ["bot.transition.sleeping"]}, (422, "unknown_event_type")),
        ({"headers": {"Content-Type": "text/plain"}}, (422, "webhook_header_refused")),
        ({"headers": {"webhook-signature": "v1,x"}}, (422, "webhook_header_refused")),
        ({"headers": {f"X-{n}": "v" for n in range(11)}}, (422, "webhook_header_refused")),
        ({"headers": {"X-A": "a\r\nB: c"}}, (422, "webhook_header_refused")),
        ({"labels": {"bad key": "x"}}, (422, "invalid_label_filter")),
        ({"url": "ftp://example.com/"}, (422, "webhook_url_refused")),
    ]:
        assert refused(client.post("/webhooks", json={"url": url, **body})) == expected, body

    first = subscribe(client, url, events=["bot.report"], headers={"X-A": "1"})
    changed = client.patch(
        f"/webhooks/{first['id']}", json={"events": None, "headers": {"X-B": "2", "X-C": "3"}}
    ).json()
    assert (changed["events"], changed["header_names"], changed["secret"]) == (
        None,
        ["X-B", "X-C"],
        None,
    )
    assert refused(client.patch(f"/webhooks/{first['id']}", json={"events": ["nope"]})) == (
        422,
        "unknown_event_type",
    )
    assert client.put("/webhook", json={"url": url}).status_code == 201  # the default counts
    for _ in range(MAX_ENDPOINTS - 2):
        subscribe(client, url)
    over = client.post("/webhooks", json={"url": url})
    assert refused(over) == (409, "webhook_limit") and over.json()["detail"]["limit"] == 4
    cancelled_bot_id = cancelled_bot(client)  # a bot's own endpoint does not count
    assert client.put(f"/bots/{cancelled_bot_id}/webhook", json={"url": url}).status_code == 201

    page = client.get("/webhooks", params={"limit": 3}).json()
    rest = client.get("/webhooks", params={"cursor": page["next_cursor"]}).json()
    listed = page["items"] + rest["items"]
    assert len(listed) == MAX_ENDPOINTS + 1 and rest["next_cursor"] is None
    assert [e["id"] for e in listed] == sorted(e["id"] for e in listed), "oldest first"
    assert refused(client.get("/webhooks", params={"cursor": "bogus"})) == (422, "invalid_cursor")

    _, stranger = manager.new_user()
    for call in (stranger.get, stranger.delete):
        assert refused(call(f"/webhooks/{first['id']}")) == (404, "webhook_not_found")
    assert refused(stranger.patch(f"/webhooks/{first['id']}", json={"name": "x"})) == (
        404,
        "webhook_not_found",
    )
    assert client.delete(f"/webhooks/{first['id']}").status_code == 204
    assert refused(client.get(f"/webhooks/{first['id']}")) == (404, "webhook_not_found")
    assert client.post("/webhooks", json={"url": url}).status_code == 201, "room again"


def test_the_v2_endpoint_is_one_of_them(manager: Manager, receiver: Receiver) -> None:
    """`PUT /webhook` keeps its meaning (a bot's override takes that bot from it), and is
    listed, changed and tested like any endpoint; a subscription gets every bot."""
    _, client = manager.new_user()
    default = client.put("/webhook", json={"url": receiver.url("/v2")})
    assert default.status_code == 201, default.text
    everything = subscribe(client, receiver.url("/v3"))
    special = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER}).json()
    override = client.put(f"/bots/{special['id']}/webhook", json={"url": receiver.url("/own")})
    assert override.status_code == 201
    assert client.post(f"/bots/{special['id']}/stop").status_code == 202
    plain = cancelled_bot(client)  # after the special one: a later marker for the default

    receiver.wait_for("/own", 1)
    receiver.wait_for("/v2", 1)
    [to_default] = queued(client, default.json()["id"])
    assert to_default["data"]["bot_id"] == plain, "the override took the special bot's"
    receiver.wait_for("/v3", 2)
    assert {b["data"]["bot_id"] for b in bodies(receiver, "/v3")} == {special["id"], plain}

    listed = {e["id"]: e for e in client.get("/webhooks").json()["items"]}
    assert listed[default.json()["id"]]["subscription"] is False
    assert listed[override.json()["id"]]["bot_id"] == special["id"]
    assert listed[everything["id"]]["subscription"] is True
    patched = client.patch(f"/webhooks/{default.json()['id']}", json={"events": ["bot.report"]})
    assert patched.status_code == 200, patched.text
    assert client.get("/webhook").json()["events"] == ["bot.report"]
    again = client.put("/webhook", json={"url": receiver.url("/v2")})
    assert (again.status_code, again.json()["id"]) == (200, default.json()["id"])
    tested = client.post(f"/webhooks/{everything['id']}/test").json()
    [test] = [json.loads(r["body"]) for r in receiver.wait_for("/v3", 3)][2:]
    assert (test["type"], test["id"]) == ("webhook.test", tested["webhook_id"])


def test_the_dashboard_adds_lists_redelivers_and_deletes(
    manager: Manager, receiver: Receiver
) -> None:
    user, client = manager.new_user()
    ui, csrf = ui_client(manager.url, user["api_key"])
    with closing(ui):
        added = ui.post(
            "/ui/webhooks",
            data={
                "csrf_token": csrf,
                "url": receiver.url("/ui-hook"),
                "name": "from the dashboard",
                "events": ["bot.transition", "command.result"],
                "labels": "team:b",
                "headers": f"X-Receiver-Key: {HEADER_VALUE}",
            },
        )
        assert added.status_code == 200, added.text
        assert 'id="secret"' in added.text and "whsec_" in added.text
        [endpoint] = client.get("/webhooks").json()["items"]
        assert (endpoint["events"], endpoint["labels"], endpoint["header_names"]) == (
            ["bot.transition", "command.result"],
            {"team": "b"},
            ["X-Receiver-Key"],
        )
        page = ui.get("/ui/webhooks").text
        assert "whsec_" not in page and HEADER_VALUE not in page, "shown once; never the value"
        assert "bot.transition, command.result" in page and "team:b" in page
        assert 'data-breaker="closed"' in page

        bad = ui.post(
            "/ui/webhooks",
            data={"csrf_token": csrf, "url": receiver.url("/x"), "headers": "Host: evil"},
        )
        assert bad.status_code == 422 and 'id="page-error"' in bad.text

        receiver.answers["/ui-hook"] = [500]  # a test event is tried once: it fails
        client.post(f"/webhooks/{endpoint['id']}/test")
        wait_until(
            lambda: "redeliver" in ui.get(f"/ui/webhooks/{endpoint['id']}").text,
            what="the failed delivery with its Redeliver button",
        )
        [failed] = client.get(
            f"/webhooks/{endpoint['id']}/deliveries", params={"status": "failed"}
        ).json()["items"]
        again = ui.post(
            f"/ui/webhooks/deliveries/{failed['id']}/redeliver", data={"csrf_token": csrf}
        )
        assert again.status_code == 303
        assert again.headers["location"] == f"/ui/webhooks/{endpoint['id']}?notice=redelivered"
        [_, second] = receiver.wait_for("/ui-hook", 2)
        assert second["headers"]["X-Receiver-Key"] == HEADER_VALUE

        gone = ui.post(f"/ui/webhooks/{endpoint['id']}/delete", data={"csrf_token": csrf})
        assert gone.status_code == 303
        assert client.get("/webhooks").json()["items"] == []
    assert HEADER_VALUE not in manager.log_path.read_text()


def test_the_cli_adds_lists_tests_and_removes(
    manager: Manager, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(output, "console", output.new_console())
    monkeypatch.setattr(output, "err", output.new_console(stderr=True))
    user, client = manager.new_user()
    env = {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": user["api_key"], "BOTFLEET_CONFIG": "/x"}

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["webhooks", *args], env=env, catch_exceptions=False)
        return result.exit_code, result.stdout + result.stderr

    code, out = cli(
        "add", receiver.url("/cli-hook"), "--event", "bot.report", "--label", "team:c",
        "--header", "X-Receiver-Key: k1", "--json",
    )  # fmt: skip
    assert code == 0, out
    endpoint = json.loads(out)
    assert endpoint["secret"].startswith("whsec_") and endpoint["header_names"] == [
        "X-Receiver-Key"
    ]
    code, out = cli("ls")
    assert code == 0 and endpoint["id"] in out and "bot.report" in out and "team:c" in out, out
    code, out = cli("show", endpoint["id"])
    assert json.loads(out)["labels"] == {"team": "c"} and "k1" not in out
    code, out = cli("test", endpoint["id"])
    assert code == 0 and out.startswith("delivered test_"), out
    assert receiver.wait_for("/cli-hook", 1)[0]["headers"]["X-Receiver-Key"] == "k1"
    code, out = cli("deliveries", endpoint["id"])
    assert code == 0 and "webhook.test" in out and "delivered" in out, out
    code, out = cli("add", receiver.url("/cli-hook"), "--event", "bot.nope")
    assert code == output.INPUT and "unknown_event_type" in out, out
    code, out = cli("rm", endpoint["id"])
    assert code == 0, out
    assert client.get("/webhooks").json()["items"] == []
