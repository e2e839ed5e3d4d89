"""The dashboard's forms drawn from a kind (issue 28, point 2): the start form shows one field per
property of the kind's config schema (text, number with min/max, checkbox, select, JSON
textarea), a password field per secret, and state key / max duration / labels; the submitted form
goes through POST /bots' checks, whose errors show beside their fields, the form kept filled and
the secret never written back; a bot page's command form draws the chosen command's payload.

Plain HTTP (a signed-in httpx client) for the forms' shape and errors; a real Chromium for the
`telegram` kind started from the dashboard against the Telegram Bot API stand-in.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.support import Manager, wait_for_status, wait_until
from tests.telegram_scenario import SCENARIO
from tests.telegram_standin import TelegramStandIn
from tests.ui_browser import click, console_errors, sign_in, text_of, ui_client, wait_for, wait_text

DEMO_CLASS = "botfleet.runtime.bots.demo:DemoBot"
SECRET = "s3cret-never-shown-" + uuid.uuid4().hex

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["greeting"],
    "additionalProperties": False,
    "properties": {
        "greeting": {
            "type": "string",
            "maxLength": 40,
            "default": "hello",
            "description": "What the bot says first.",
        },
        "count": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
        "ratio": {"type": ["number", "null"], "minimum": 0},
        "loud": {"type": "boolean", "default": False},
        "mood": {"enum": ["calm", "busy"], "default": "calm"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "limits": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
SAY = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "maxLength": 100}, "times": {"type": "integer"}},
}


def register_kind(manager: Manager) -> str:
    name = f"formy-{uuid.uuid4().hex[:8]}"
    with manager.admin() as admin:
        made = admin.post(
            "/admin/kinds",
            json={
                "name": name,
                "run": {"python": DEMO_CLASS},
                "description": "a kind with a field of each type",
                "config_schema": CONFIG_SCHEMA,
                "secrets": ["api_token"],
                "commands": {"say": SAY},
            },
        )
    assert made.status_code == 201, made.text
    return name


def field_id(page: str, name: str) -> str:
    """The id of the input named `name` (its error is `#<id>-error`)."""
    found = re.search(rf'id="([^"]+)" name="{re.escape(name)}"', page)
    assert found is not None, f"no input named {name!r} on the page"
    return found.group(1)


def error_beside(page: str, name: str) -> str:
    found = re.search(rf'id="{re.escape(field_id(page, name))}-error">([^<]*)</p>', page)
    assert found is not None, f"no error slot beside {name!r}"
    return html.unescape(found.group(1))


def tag_of(page: str, name: str) -> str:
    """The opening tag of the input named `name` (a select: through its options)."""
    found = re.search(rf'<(input|select|textarea)[^>]* name="{re.escape(name)}"[^>]*>', page)
    assert found is not None, f"no input named {name!r}"
    if found.group(1) == "select":
        return page[found.start() : page.index("</select>", found.start())]
    return found.group(0)


def test_the_start_form_is_drawn_from_the_kind_and_fills_the_config(manager: Manager) -> None:
    kind = register_kind(manager)
    user, api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        page = client.get("/ui/bots/new", params={"bot": kind}).text
        assert f'<option value="{kind}" selected>' in page  # the kind picker
        assert "a kind with a field of each type" in page
        greeting = tag_of(page, "config.greeting")
        assert 'value="hello"' in greeting and 'maxlength="40"' in greeting
        assert "What the bot says first." in page  # the description as help
        assert re.search(r'for="[^"]+">greeting <span class="required"', page)  # required
        count = tag_of(page, "config.count")
        assert 'type="number"' in count and 'min="1"' in count and 'max="10"' in count
        assert 'step="1"' in count and 'value="3"' in count
        assert 'step="any"' in tag_of(page, "config.ratio")
        assert 'type="checkbox"' in tag_of(page, "config.loud")
        mood = tag_of(page, "config.mood")
        assert '<option value="&#34;calm&#34;" selected>calm</option>' in mood
        assert 'data-json="value"' in tag_of(page, "config.tags")
        assert 'data-json="value"' in tag_of(page, "config.limits")
        assert 'type="password"' in tag_of(page, "secret.api_token")
        for fixed in ("state_key", "max_duration_s", "labels"):
            assert f'name="{fixed}"' in page
        assert 'name="config"' not in page  # additionalProperties false: no JSON for the rest
        assert 'name="image"' not in page  # the process backend runs no images

        started = client.post(
            "/ui/bots/new",
            data={
                "csrf_token": csrf,
                "bot": kind,
                "name": "drawn",
                "config.greeting": "hi there",
                "config.count": "7",
                "config.ratio": "0.5",
                "config.loud": "1",
                "config.mood": '"busy"',
                "config.tags": '["a", "b"]',
                "config.limits": '{"a": 2}',
                "secret.api_token": SECRET,
                "state_key": f"drawn-{uuid.uuid4().hex[:6]}",
                "max_duration_s": "600",
                "labels": "team:forms",
            },
        )
        assert started.status_code == 303, started.text[-2000:]
        bot_id = started.headers["location"].split("/ui/bots/")[1].split("?")[0]
        bot = api.get(f"/bots/{bot_id}").json()
        assert bot["config"] == {
            "greeting": "hi there",
            "count": 7,
            "ratio": 0.5,
            "loud": True,
            "mood": "busy",
            "tags": ["a", "b"],
            "limits": {"a": 2},
        }
        assert (bot["bot"], bot["max_duration_s"], bot["labels"]) == (kind, 600, {"team": "forms"})
        assert bot["state_key"].startswith("drawn-")
        assert SECRET not in client.get(f"/ui/bots/{bot_id}").text

        # An unticked box with a default is false; empty inputs are left out.
        minimal = client.post(
            "/ui/bots/new",
            data={"csrf_token": csrf, "bot": kind, "config.greeting": "x", "secret.api_token": "t"},
        )
        assert minimal.status_code == 303, minimal.text[-2000:]
        other = minimal.headers["location"].split("/ui/bots/")[1].split("?")[0]
        assert api.get(f"/bots/{other}").json()["config"] == {"greeting": "x", "loud": False}
        for made in (bot_id, other):
            api.post(f"/bots/{made}/stop")


def test_a_wrong_value_is_shown_beside_its_field_and_nothing_is_stored(manager: Manager) -> None:
    kind = register_kind(manager)
    user, api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        form = {
            "csrf_token": csrf,
            "bot": kind,
            "name": "kept-name",
            "config.greeting": "still here",
            "config.count": "11",  # the kind's schema: at most 10
            "config.tags": '["a"]',
            "secret.api_token": SECRET,
        }
        refused = client.post("/ui/bots/new", data=form)
        assert refused.status_code == 422
        page = refused.text
        assert "11 is greater than the maximum of 10" in error_beside(page, "config.count")
        assert error_beside(page, "config.greeting") == ""
        assert 'value="still here"' in tag_of(page, "config.greeting")  # kept filled
        assert 'value="kept-name"' in page
        assert "[&#34;a&#34;]" in page  # the JSON field too
        assert SECRET not in page  # the secret is never written back
        assert "value=" not in tag_of(page, "secret.api_token")

        # The form's own reading: a number that is no number, JSON that is not JSON.
        refused = client.post(
            "/ui/bots/new",
            data={**form, "config.count": "three", "config.limits": "{nope"},
        )
        assert refused.status_code == 422
        assert error_beside(refused.text, "config.count") == "must be a whole number"
        assert "is not valid JSON" in error_beside(refused.text, "config.limits")
        assert SECRET not in refused.text

        # A missing secret (the kind needs it) beside the secret's field; a missing required
        # property beside its own.
        refused = client.post(
            "/ui/bots/new",
            data={**form, "config.count": "2", "secret.api_token": "", "config.greeting": ""},
        )
        assert refused.status_code == 422
        assert "required" in error_beside(refused.text, "config.greeting")
        refused = client.post(
            "/ui/bots/new", data={**form, "config.count": "2", "secret.api_token": ""}
        )
        assert refused.status_code == 422
        assert error_beside(refused.text, "secret.api_token") == "required secret"
        assert api.get("/bots").json()["items"] == []


def test_the_command_form_is_drawn_from_the_command(manager: Manager) -> None:
    kind = register_kind(manager)
    user, api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        # The built-in demo's `sleep`: a number field from its schema; the result shows.
        demo = api.post("/bots", json={"bot": "demo", "config": {}}).json()
        wait_for_status(api, demo["id"], {"active"})
        page = client.get(f"/ui/bots/{demo['id']}", params={"command": "sleep"}).text
        assert '<option value="sleep" selected>sleep</option>' in page
        assert '<option value="-other">' in page  # demo answers other actions too
        assert 'type="number"' in tag_of(page, "payload.s")
        sent = client.post(
            f"/ui/bots/{demo['id']}/commands",
            data={"csrf_token": csrf, "form": "drawn", "action": "sleep", "payload.s": "0"},
        )
        assert sent.status_code == 303, sent.text[-2000:]
        assert "command=sleep" in sent.headers["location"]
        wait_until(
            lambda: "{&#34;slept_s&#34;: 0.0}" in client.get(f"/ui/bots/{demo['id']}").text,
            timeout=30,
            what="the sleep command's result on the bot's page",
        )
        rows = api.get(f"/bots/{demo['id']}/commands").json()["items"]
        assert [(r["action"], r["payload"]) for r in rows] == [("sleep", {"s": 0})]
        api.post(f"/bots/{demo['id']}/stop")

        # A registered kind's `say`: the kind's refusal beside the field, nothing stored.
        made = api.post(
            "/bots",
            json={
                "bot": kind,
                "config": {"greeting": "hi"},
                "secrets": {"api_token": "t"},
            },
        ).json()
        page = client.get(f"/ui/bots/{made['id']}").text
        assert '<option value="-other">' not in page  # only what the kind declares
        assert 'name="payload.text"' in page and 'name="payload.times"' in page
        refused = client.post(
            f"/ui/bots/{made['id']}/commands",
            data={"csrf_token": csrf, "form": "drawn", "action": "say", "payload.times": "2"},
        )
        assert refused.status_code == 422
        assert "'text' is a required property" in error_beside(refused.text, "payload.text")
        assert 'value="2"' in tag_of(refused.text, "payload.times")  # kept filled
        refused = client.post(
            f"/ui/bots/{made['id']}/commands",
            data={"csrf_token": csrf, "form": "drawn", "action": "say", "payload.times": "x"},
        )
        assert error_beside(refused.text, "payload.times") == "must be a whole number"
        assert api.get(f"/bots/{made['id']}/commands").json()["items"] == []
        api.post(f"/bots/{made['id']}/stop")


# ---- the telegram kind, from the dashboard, in a browser ------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[TelegramStandIn]:
    with TelegramStandIn() as server:
        yield server


def _fill(driver: Any, css: str, text: str) -> None:
    element = driver.find_element(By.CSS_SELECTOR, css)
    element.clear()
    element.send_keys(text)


def _set_json(driver: Any, css: str, value: Any) -> None:
    """A long JSON text, set as typed (send_keys of kilobytes is slow and auto-indents nothing)."""
    element = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].value = arguments[1];", element, json.dumps(value))


def test_a_telegram_bot_started_and_commanded_from_the_dashboard(
    manager: Manager, browser: Any, standin: TelegramStandIn
) -> None:
    token = f"{uuid.uuid4().int % 10**9 + 10**9}:AA{uuid.uuid4().hex}"
    standin.add_bot(token)
    user, api = manager.new_user()
    with closing(api):
        sign_in(browser, manager.url, user["api_key"])
        browser.get(f"{manager.url}/ui/bots/new")
        Select(browser.find_element(By.ID, "kind")).select_by_value("telegram")  # submits itself
        wait_for(browser, lambda d: "bot=telegram" in d.current_url, what="the telegram form")
        assert not browser.find_element(By.ID, "choose-kind").is_displayed()  # JS: no button
        _fill(browser, "[name='name']", "tg-from-ui")
        _fill(browser, "[name='config.language']", "en")
        _fill(browser, "[name='config.api_url']", "ftp://not-a-bot-api")  # the schema: ^https?://
        _fill(browser, "[name='config.poll_timeout_s']", "2")
        _set_json(browser, "[name='config.scenario']", SCENARIO)
        _fill(browser, "[name='secret.bot_token']", token)
        click(browser, "#start")

        def api_url_error(driver: Any) -> str | None:
            """The refusal beside the field, once the answer's page is the one shown (until
            then a found element may belong to the page being left)."""
            field_id = driver.find_element(By.NAME, "config.api_url").get_attribute("id")
            text: str = driver.find_element(By.ID, f"{field_id}-error").text
            return text if "does not match" in text else None

        shown = wait_for(browser, api_url_error, what="the api_url refusal beside its field")
        assert "^https?://" in shown
        assert token not in browser.page_source and token.split(":")[1] not in browser.page_source
        assert browser.find_element(By.NAME, "secret.bot_token").get_attribute("value") == ""
        assert api.get("/bots").json()["items"] == []  # nothing stored
        refusals = console_errors(browser)  # the 422 itself, and nothing else
        assert all(e["source"] == "network" and "422" in e["message"] for e in refusals)

        _fill(browser, "[name='config.api_url']", standin.url)  # the rest is still filled in
        _fill(browser, "[name='secret.bot_token']", token)
        click(browser, "#start")
        wait_for(browser, lambda d: "/ui/bots/" in d.current_url and "new" not in d.current_url)
        bot_id = browser.current_url.split("/ui/bots/")[1].split("?")[0]
        bot = api.get(f"/bots/{bot_id}").json()
        assert bot["bot"] == "telegram" and bot["config"]["scenario"] == SCENARIO
        assert bot["config"]["poll_timeout_s"] == 2 and bot["config"]["api_url"] == standin.url
        wait_text(browser, "#bot-status", "active", timeout=90)
        standin.user_sends(token, 2201, "/start", first_name="Ann")
        assert standin.wait_for_messages(token, 2201, 1)[0].text == "Hi! What is your name?"

        # The command form: `broadcast`, its `text` drawn from its schema.
        Select(browser.find_element(By.ID, "command-pick")).select_by_value("broadcast")
        wait_for(browser, lambda d: "command=broadcast" in d.current_url, what="broadcast form")
        _fill(browser, "[name='payload.text']", "Hello from the dashboard")
        click(browser, "#send-command")
        wait_text(browser, ".flash.notice", "Command sent")
        result = wait_for(
            browser,
            lambda d: json.loads(
                text_of(d, '#commands tr[data-action="broadcast"] .command-result')
            ),
            timeout=45,
            what="the broadcast's result",
        )
        assert result == {"sent": 1, "failed": 0}
        assert standin.wait_for_messages(token, 2201, 2)[-1].text == "Hello from the dashboard"
        api.post(f"/bots/{bot_id}/stop")
        wait_for_status(api, bot_id, {"completed", "failed"})


def test_the_kind_picker_works_without_javascript(manager: Manager) -> None:
    """The picker is a GET form: `?bot=<kind>` is the form for that kind."""
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        page = client.get("/ui/bots/new", params={"bot": "telegram"}).text
        assert '<form method="get" action="/ui/bots/new" id="kind-form">' in page
        assert 'id="choose-kind"' in page
        assert 'name="config.scenario"' in page and 'name="secret.bot_token"' in page
        default = client.get("/ui/bots/new").text
        assert '<option value="demo" selected>' in default
        assert 'name="config.report_every_s"' in default
        assert 'name="config"' in default  # demo takes any other key: a JSON textarea for them


def test_a_kinds_schema_text_is_escaped_in_the_form(manager: Manager) -> None:
    """Titles, descriptions, property names and enum values are the operator's text, shown as
    text: none becomes markup."""
    evil_key = '"><img src=x onerror=alert(1)>'
    evil_text = "<script>alert(2)</script>"
    name = f"evil-{uuid.uuid4().hex[:8]}"
    with manager.admin() as admin:
        made = admin.post(
            "/admin/kinds",
            json={
                "name": name,
                "run": {"python": DEMO_CLASS},
                "description": evil_text,
                "config_schema": {
                    "type": "object",
                    "description": evil_text,
                    "properties": {
                        evil_key: {"type": "string", "title": evil_text, "description": evil_text},
                        "pick": {"enum": [evil_text, "<b>bold</b>"]},
                    },
                },
            },
        )
    assert made.status_code == 201, made.text
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        page = client.get("/ui/bots/new", params={"bot": name}).text
    for raw in (evil_key, evil_text, "<b>bold</b>", "<img"):
        assert raw not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert 'name="config.&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page
