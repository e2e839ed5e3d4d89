"""Trying a webhook endpoint (issue 29, point 7): the test event through the API
(`POST /webhooks/{id}/test`) and the CLI (`botfleet webhooks test`), and the example receiver
(examples/webhook_receiver.py) verifying real deliveries, against a real manager posting to
receivers on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from botfleet.cli import output
from botfleet.cli.main import app
from botfleet.manager.core.webhook_signing import sign, verify
from tests.listeners import Receiver
from tests.support import REPO, Manager, RedisServer, running_manager, wait_until

RETRY_S = 0.5
MANAGER_ENV = {
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on loopback
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
    "BOTFLEET_WEBHOOK_RETRY_S": str(RETRY_S),
    # Two failures in a row pause an endpoint for long: only a test event's probe reaches it.
    "BOTFLEET_WEBHOOK_BREAKER_FAILURES": "2",
    "BOTFLEET_WEBHOOK_BREAKER_PAUSE_S": "3600",
}
EXAMPLE = REPO / "examples" / "webhook_receiver.py"
LATER = "2099-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("webhook-tests")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def set_webhook(client: httpx.Client, url: str, path: str = "/webhook") -> dict[str, Any]:
    answer = client.put(path, json={"url": url})
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def delivery_once(client: httpx.Client, delivery_id: str, status: str) -> dict[str, Any]:
    """The delivery once it has this status."""
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(client.get(f"/webhook/deliveries/{delivery_id}").json())
        return found.get("status") == status

    wait_until(reached, timeout=30, what=f"delivery {delivery_id} {status}")
    return found


def cancelled_bot(client: httpx.Client) -> str:
    """A bot scheduled for later, then stopped: exactly one transition (requested → completed)."""
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert bot.status_code == 201, bot.text
    assert client.post(f"/bots/{bot.json()['id']}/stop").status_code == 202
    return str(bot.json()["id"])


# ---- the API --------------------------------------------------------------------------------


def test_the_test_event_is_sent_signed_and_recorded_as_a_delivery(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    endpoint = set_webhook(client, receiver.url("/api-test"))
    answer = client.post(f"/webhooks/{endpoint['id']}/test")
    assert answer.status_code == 202, answer.text
    queued = answer.json()
    assert (queued["status"], queued["endpoint_id"], queued["bot_id"]) == (
        "pending",
        endpoint["id"],
        "",
    )
    assert queued["payload"]["type"] == "webhook.test"
    assert queued["payload"]["data"] == {
        "endpoint_id": endpoint["id"],
        "bot_id": None,
        "message": "a test event, sent on request",
    }

    [request] = receiver.wait_for("/api-test", 1)
    verify(endpoint["secret"], request["headers"], request["body"])  # raises unless signed
    assert json.loads(request["body"]) == queued["payload"]
    assert request["headers"]["webhook-id"] == queued["webhook_id"] == queued["payload"]["id"]

    delivered = delivery_once(client, queued["id"], "delivered")
    assert [a["status_code"] for a in delivered["attempts"]] == [200]
    listed = client.get("/webhook/deliveries").json()["items"]
    assert queued["id"] in [d["id"] for d in listed]


def test_a_bots_own_endpoint_gets_its_test_event(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    bot_id = cancelled_bot(client)
    endpoint = set_webhook(client, receiver.url("/bot-test"), f"/bots/{bot_id}/webhook")
    queued = client.post(f"/webhooks/{endpoint['id']}/test").json()
    [request] = receiver.wait_for("/bot-test", 1)
    verify(endpoint["secret"], request["headers"], request["body"])
    assert json.loads(request["body"])["data"]["bot_id"] == bot_id
    assert delivery_once(client, queued["id"], "delivered")["bot_id"] == bot_id
    assert client.get("/webhook/deliveries", params={"bot_id": bot_id}).json()["items"]


def test_a_failed_test_event_is_tried_once(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    receiver.answers["/failing-test"] = [500, 500, 500, 500]
    endpoint = set_webhook(client, receiver.url("/failing-test"))
    queued = client.post(f"/webhooks/{endpoint['id']}/test").json()
    failed = delivery_once(client, queued["id"], "failed")
    assert [(a["status_code"], a["error"]) for a in failed["attempts"]] == [(500, "HTTP 500")]
    time.sleep(4 * RETRY_S)  # a retried delivery would have had its second attempt by now
    again = client.get(f"/webhook/deliveries/{queued['id']}").json()
    assert (again["status"], again["attempt_count"]) == ("failed", 1)
    assert len(receiver.got("/failing-test")) == 1


def test_a_paused_endpoint_is_probed_by_the_test_event_at_once(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    receiver.answers["/paused-test"] = [500, 500]
    endpoint = set_webhook(client, receiver.url("/paused-test"))
    for _ in range(2):
        failing = client.post(f"/webhooks/{endpoint['id']}/test").json()
        delivery_once(client, failing["id"], "failed")
    paused = client.get("/webhook").json()
    assert paused["paused_until"] is not None and paused["consecutive_failures"] == 2, paused
    queued = client.post(f"/webhooks/{endpoint['id']}/test").json()
    delivered = delivery_once(client, queued["id"], "delivered")  # not in an hour
    assert [a["status_code"] for a in delivered["attempts"]] == [200]
    healthy = client.get("/webhook").json()
    assert (healthy["paused_until"], healthy["consecutive_failures"]) == (None, 0)


def test_a_disabled_or_anothers_endpoint_is_refused(manager: Manager, receiver: Receiver) -> None:
    _, client = manager.new_user()
    _, stranger = manager.new_user()
    endpoint = set_webhook(client, receiver.url("/refused-test"))
    other = stranger.post(f"/webhooks/{endpoint['id']}/test")
    assert (other.status_code, other.json()["detail"]["code"]) == (404, "webhook_not_found")
    unknown = client.post("/webhooks/no-such-endpoint/test")
    assert (unknown.status_code, unknown.json()["detail"]["code"]) == (404, "webhook_not_found")
    off = client.put("/webhook", json={"url": receiver.url("/refused-test"), "enabled": False})
    assert off.status_code == 200, off.text
    disabled = client.post(f"/webhooks/{endpoint['id']}/test")
    assert (disabled.status_code, disabled.json()["detail"]["code"]) == (409, "webhook_disabled")
    assert client.get("/webhook/deliveries").json()["items"] == []
    assert receiver.got("/refused-test") == []


# ---- the CLI --------------------------------------------------------------------------------


def run_cli(manager: Manager, key: str, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": key, "BOTFLEET_CONFIG": "/nonexistent"}
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh consoles for in-process runs, wide enough that a line is never wrapped."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(output, "console", output.new_console())
    monkeypatch.setattr(output, "err", output.new_console(stderr=True))


@pytest.mark.usefixtures("wide_consoles")
def test_the_cli_sends_a_test_event_and_shows_the_answer(
    manager: Manager, receiver: Receiver
) -> None:
    created, client = manager.new_user()
    endpoint = set_webhook(client, receiver.url("/cli-test"))
    code, out, err = run_cli(manager, created["api_key"], "webhooks", "test")
    assert code == 0, out + err
    [request] = receiver.wait_for("/cli-test", 1)
    verify(endpoint["secret"], request["headers"], request["body"])
    sent = json.loads(request["body"])
    assert sent["type"] == "webhook.test"
    assert out.startswith(f"delivered {sent['id']} to {receiver.url('/cli-test')}: HTTP 200"), out
    [delivery] = client.get("/webhook/deliveries").json()["items"]
    assert (delivery["webhook_id"], delivery["status"]) == (sent["id"], "delivered")

    receiver.answers["/cli-test"] = [503]
    code, out, err = run_cli(manager, created["api_key"], "webhooks", "test", "--json")
    assert code == output.FAILED, out + err
    shown = json.loads(out)
    assert (shown["status"], [a["status_code"] for a in shown["attempts"]]) == ("failed", [503])

    bot_id = cancelled_bot(client)
    code, out, err = run_cli(manager, created["api_key"], "webhooks", "test", "--bot", bot_id)
    expected = f"error: webhook_not_found: no webhook is set for bot {bot_id}\n"
    assert (code, err) == (output.NOT_FOUND, expected), out


# ---- the example receiver -------------------------------------------------------------------


class Example:
    """examples/webhook_receiver.py in a subprocess, on 127.0.0.1 at a free port; its lines."""

    def __init__(self, secret: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", "0"],
            env={"WEBHOOK_SECRET": secret, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._keep, args=(self.process.stderr,), daemon=True).start()
        first = self.next_line()
        assert first.startswith("listening on http://127.0.0.1:"), first
        self.url = first.removeprefix("listening on ").strip()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def _keep(self, stream: Any) -> None:
        for line in stream:
            self.errors.append(line.rstrip("\n"))

    def next_line(self, timeout: float = 30) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the example printed nothing; stderr: {self.errors}") from None

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def test_the_example_receiver_verifies_real_deliveries(
    manager: Manager, receiver: Receiver
) -> None:
    _, client = manager.new_user()
    # The secret comes with the endpoint; the example's port once it runs: the URL follows.
    secret = set_webhook(client, receiver.url("/placeholder"))["secret"]
    example = Example(secret)
    try:
        endpoint = set_webhook(client, example.url + "hooks")
        queued = client.post(f"/webhooks/{endpoint['id']}/test").json()
        kind, webhook_id, _, data = example.next_line().split(" ", 3)
        assert (kind, webhook_id) == ("webhook.test", queued["webhook_id"])
        assert json.loads(data)["endpoint_id"] == endpoint["id"]
        delivered = delivery_once(client, queued["id"], "delivered")
        assert [a["status_code"] for a in delivered["attempts"]] == [204]

        bot_id = cancelled_bot(client)  # a real event: the bot's transition
        kind, _, _, data = example.next_line().split(" ", 3)
        assert (kind, json.loads(data)["bot_id"], json.loads(data)["to"]) == (
            "bot.transition",
            bot_id,
            "completed",
        )

        # A request not signed with the endpoint's secret is refused and not printed.
        body = b'{"type":"bot.transition","id":"evt_forged","data":{}}'
        forged = sign("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", "evt_forged", body)
        answer = httpx.post(example.url, content=body, headers=forged)
        assert answer.status_code == 401
        stale = sign(secret, "evt_stale", body, timestamp=int(time.time()) - 3600)
        assert httpx.post(example.url, content=body, headers=stale).status_code == 401
        fresh = sign(secret, "evt_fresh", body)
        assert httpx.post(example.url, content=body, headers=fresh).status_code == 204
        assert example.next_line().startswith("bot.transition evt_fresh "), "the forged ones not"
        wait_until(lambda: len(example.errors) == 2, timeout=10, what="two refusals logged")
        assert all(line.startswith("refused a request to /") for line in example.errors)
    finally:
        example.close()


def test_the_dashboard_lists_endpoints_and_sends_a_test_event(
    manager: Manager, receiver: Receiver
) -> None:
    """The Webhooks page (issue 29): the user's endpoints with a "Send test event" button that
    sends the same signed `webhook.test`, and the delivery listed once it arrived; another
    user cannot test it."""
    from tests.ui_browser import ui_client

    user, client = manager.new_user()
    endpoint = set_webhook(client, receiver.url("/ui-test"))
    ui, csrf = ui_client(manager.url, user["api_key"])
    page = ui.get("/ui/webhooks")
    assert page.status_code == 200, page.text
    assert receiver.url("/ui-test") in page.text
    assert f'action="/ui/webhooks/{endpoint["id"]}/test"' in page.text

    sent = ui.post(f"/ui/webhooks/{endpoint['id']}/test", data={"csrf_token": csrf})
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"] == "/ui/webhooks?notice=test-sent"
    [request] = receiver.wait_for("/ui-test", 1)
    verify(endpoint["secret"], request["headers"], request["body"])  # raises unless signed
    assert json.loads(request["body"])["type"] == "webhook.test"

    def listed_delivered() -> bool:
        shown = ui.get("/ui/webhooks").text
        row = shown[shown.find('<table id="deliveries">') :]
        return "webhook.test" in row and '<td class="delivery-status">delivered</td>' in row

    assert wait_until(listed_delivered, what="the delivered test event on the page")

    other, _ = manager.new_user()
    other_ui, other_csrf = ui_client(manager.url, other["api_key"])
    refused = other_ui.post(f"/ui/webhooks/{endpoint['id']}/test", data={"csrf_token": other_csrf})
    assert refused.status_code == 404, refused.text
    assert 'id="page-error"' in refused.text
    assert receiver.url("/ui-test") not in refused.text  # nothing of another user's shown
    assert len(receiver.got("/ui-test")) == 1
