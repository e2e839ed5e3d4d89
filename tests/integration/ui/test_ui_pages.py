"""The dashboard's pages over plain HTTP: what a bot's page says about its life (the timeline
marks a failure and why, restarts as attempts), the start form's refusals carrying the API's
message, the actions on an ended bot (relaunch, delete), and what a read-only key or the
admin token may do there."""

from __future__ import annotations

import re
import sys
from contextlib import closing
from pathlib import Path

import httpx

from tests.support import (
    ADMIN_TOKEN,
    Manager,
    PortHold,
    detached,
    user_env,
    wait_for_status,
    wait_until,
)
from tests.ui_browser import ui_client


def test_the_timeline_shows_each_attempt_and_where_it_failed(manager: Manager) -> None:
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        made = api.post(
            "/bots",
            json={
                "bot": "demo",
                "name": "crashy",
                "config": {"crash_after_s": 1},
                "restart": {"max_retries": 1, "backoff_s": 0},
            },
        ).json()
        wait_for_status(api, made["id"], {"failed"}, timeout=60)
        page = client.get(f"/ui/bots/{made['id']}").text
        rows = api.get(f"/bots/{made['id']}/transitions").json()["items"]
        failure = next(r for r in rows if r["to"] == "failed")
        # Two attempts drawn, a failure mark with its reason, every transition listed.
        assert page.count('y="76"') == 2
        assert page.count('<rect class="failed" x=') >= 2  # both attempts ended in a failure
        assert page.count('<line class="fail"') == 2  # the restart, then the end
        assert f"failed: {failure['reason']}" in page
        assert "attempt failed: restarting: attempt 1 ended" in page
        assert page.count("<li") >= len(rows)
        for row in rows:
            assert f"<code>{row['reason']}</code>" in page
        assert 'id="relaunch"' in page and 'id="delete"' in page and 'id="stop"' not in page


def test_the_start_form_shows_the_apis_refusals(manager: Manager) -> None:
    user, api = manager.new_user(max_bots=1)
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        form = {"csrf_token": csrf, "bot": "demo", "name": "first", "config": "{}"}
        bad_json = client.post("/ui/bots/new", data={**form, "config": "{nope"})
        assert bad_json.status_code == 422
        assert "config is not valid JSON" in bad_json.text
        assert 'value="first"' in bad_json.text  # the form keeps what was typed
        bad_kind = client.post("/ui/bots/new", data={**form, "bot": "no such thing!"})
        assert bad_kind.status_code == 422
        bad_labels = client.post("/ui/bots/new", data={**form, "labels": "no-equals-sign"})
        assert bad_labels.status_code == 422
        assert "key:value" in bad_labels.text
        assert api.get("/bots").json()["items"] == []

        started = client.post(
            "/ui/bots/new",
            data={**form, "labels": "team=ui", "max_retries": "2", "on_start_failed": "1"},
        )
        assert started.status_code == 303
        bot_id = started.headers["location"].split("/ui/bots/")[1].split("?")[0]
        bot = api.get(f"/bots/{bot_id}").json()
        assert (bot["name"], bot["labels"]) == ("first", {"team": "ui"})

        over = client.post("/ui/bots/new", data={**form, "name": "second"})
        assert over.status_code == 429  # the user's limit, with the API's message
        assert "max_concurrent_bots" in over.text or "limit" in over.text
        assert len(api.get("/bots").json()["items"]) == 1
        api.post(f"/bots/{bot_id}/stop")


def test_relaunch_and_delete_an_ended_bot(manager: Manager) -> None:
    user, api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        old = api.post("/bots", json={"bot": "demo", "name": "again", "config": {}}).json()
        live_delete = client.post(f"/ui/bots/{old['id']}/delete", data={"csrf_token": csrf})
        assert live_delete.status_code == 409  # bot_live: the API's rule and message
        assert "stop it first" in live_delete.text or "live" in live_delete.text
        api.post(f"/bots/{old['id']}/stop")
        wait_for_status(api, old["id"], {"completed"})

        relaunched = client.post(f"/ui/bots/{old['id']}/relaunch", data={"csrf_token": csrf})
        assert relaunched.status_code == 303
        new_id = relaunched.headers["location"].split("/ui/bots/")[1].split("?")[0]
        assert new_id != old["id"]
        assert api.get(f"/bots/{new_id}").json()["relaunch_of"] == old["id"]
        assert f'href="/ui/bots/{old["id"]}"' in client.get(f"/ui/bots/{new_id}").text

        deleted = client.post(f"/ui/bots/{old['id']}/delete", data={"csrf_token": csrf})
        assert deleted.status_code == 303
        assert "Bot deleted" in client.get(deleted.headers["location"]).text
        assert api.get(f"/bots/{old['id']}").status_code == 404
        api.post(f"/bots/{new_id}/stop")


def test_a_read_only_key_may_look_but_not_act(manager: Manager) -> None:
    user, api = manager.new_user()
    with manager.admin() as admin:
        made = admin.post(
            f"/admin/users/{user['id']}/keys", json={"name": "viewer", "scopes": ["bots:read"]}
        )
        assert made.status_code == 201, made.text
    bot = api.post("/bots", json={"bot": "demo", "config": {}}).json()
    client, csrf = ui_client(manager.url, made.json()["api_key"])
    with closing(client), closing(api):
        assert client.get(f"/ui/bots/{bot['id']}").status_code == 200
        refused = client.post(f"/ui/bots/{bot['id']}/stop", data={"csrf_token": csrf})
        assert refused.status_code == 403
        assert "bots:write" in refused.text
        assert api.get(f"/bots/{bot['id']}").json()["status"] != "stopping"
        api.post(f"/bots/{bot['id']}/stop")


def test_the_admin_may_stop_but_not_command_a_users_bot(manager: Manager) -> None:
    _, api = manager.new_user()
    bot = api.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(api, bot["id"], {"active"})
    client, csrf = ui_client(manager.url, ADMIN_TOKEN)
    with closing(client), closing(api):
        command = client.post(
            f"/ui/bots/{bot['id']}/commands",
            data={"csrf_token": csrf, "action": "echo", "payload": "{}"},
        )
        assert command.status_code == 403
        assert "user&#39;s API key" in command.text
        assert api.get(f"/bots/{bot['id']}/commands").json()["items"] == []
        stop = client.post(f"/ui/bots/{bot['id']}/stop", data={"csrf_token": csrf})
        assert stop.status_code == 303
        wait_for_status(api, bot["id"], {"completed"})
        rows = api.get(f"/bots/{bot['id']}/transitions").json()["items"]
        assert any(r["actor"] == "admin" for r in rows)


def test_the_logs_stream_answers_the_bots_output(manager: Manager) -> None:
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        bot = api.post("/bots", json={"bot": "demo", "config": {"marker": "log-me"}}).json()
        wait_for_status(api, bot["id"], {"active"})
        api.post(f"/bots/{bot['id']}/stop")
        wait_for_status(api, bot["id"], {"completed"})
        text = wait_until(
            lambda: (t := client.get(f"/ui/bots/{bot['id']}/logs").text) and "log-me" in t and t,
            timeout=20,
            what="the bot's output",
        )
        assert re.search(r"started with config .*log-me", text)


def test_make_run_prints_the_dashboard_on_the_embedded_default(tmp_path: Path) -> None:
    """`make run`'s manager (SQLite, embedded Redis) serves the dashboard and says where."""
    hold = PortHold()
    port = hold.port
    log = tmp_path / "run.log"
    env = user_env(BOTFLEET_DATA_DIR=str(tmp_path / "data"), BOTFLEET_PORT=str(port))
    command = [sys.executable, "-m", "botfleet.manager", "serve", "--welcome"]
    with detached(command, env=env, log=log, listener=hold.listener()):
        found = wait_until(
            lambda: re.search(r"Dashboard: (\S+)", log.read_text()),
            timeout=60,
            what="the dashboard's address",
        )
        assert found.group(1) == f"http://127.0.0.1:{port}/ui"
        key = re.search(r"BOTFLEET_KEY=(\S+)", log.read_text())
        assert key is not None

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="the manager")
        client, _ = ui_client(f"http://127.0.0.1:{port}", key.group(1))
        with closing(client):
            assert "Fleet" in client.get("/ui").text
            css = client.get("/ui/static/ui.css")
            assert css.status_code == 200 and ".badge" in css.text
    hold.release()


def test_the_admin_filters_the_fleet_by_user(manager: Manager) -> None:
    first, first_api = manager.new_user()
    second, second_api = manager.new_user()
    one = first_api.post("/bots", json={"bot": "demo", "name": "of-first", "config": {}}).json()
    two = second_api.post("/bots", json={"bot": "demo", "name": "of-second", "config": {}}).json()
    client, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(client), closing(first_api), closing(second_api):
        everyone = client.get("/ui").text
        assert "of-first" in everyone and "of-second" in everyone
        assert f'<option value="{first["id"]}"' in everyone  # the user filter lists users
        only_first = client.get("/ui", params={"user_id": first["id"]}).text
        assert "of-first" in only_first and "of-second" not in only_first
        mine = ui_client(manager.url, first["api_key"])[0]
        with closing(mine):  # a user's own filter cannot widen their view
            page = mine.get("/ui", params={"user_id": second["id"]}).text
            assert "of-first" in page and "of-second" not in page
        first_api.post(f"/bots/{one['id']}/stop")
        second_api.post(f"/bots/{two['id']}/stop")
