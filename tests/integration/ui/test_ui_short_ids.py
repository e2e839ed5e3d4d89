"""The dashboard speaks of bots and users as a person reads them (issue 29, point 4): the short id
is an id's LAST 8 characters (ids are UUIDv7: their first ones are the time, the same for every
bot made in the same minute), the search takes it back (or a prefix), the header and the admin
pages name users, and the start form takes labels as `key:value` (`key=value` with a warning).

Bots here are scheduled an hour ahead: they are rows, never processes."""

from __future__ import annotations

import html
import re
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from tests.support import ADMIN_TOKEN, Manager
from tests.ui_browser import click, sign_in, text_of, ui_client, wait_for

LATER = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
ROW_RE = re.compile(r'<tr data-bot-id="([0-9a-f-]+)">(.*?)</tr>', re.S)
ID_CELL_RE = re.compile(r'<td class="mono bot-id" title="([0-9a-f-]+)">([^<]*)</td>')


def _scheduled(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER, **body})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _same_minute_pair(api: httpx.Client) -> list[dict[str, Any]]:
    """Two bots whose ids share their first 8 characters (made within the same 65 s; a third
    when a boundary fell between the first two)."""
    made = [_scheduled(api), _scheduled(api)]
    if made[0]["id"][:8] != made[1]["id"][:8]:
        made = [made[1], _scheduled(api)]
    assert made[0]["id"][:8] == made[1]["id"][:8], made
    return made


def _shown_ids(page: str) -> dict[str, str]:
    """{full id: the id the fleet table shows} of every row."""
    shown = {}
    for bot_id, row in ROW_RE.findall(page):
        cell = ID_CELL_RE.search(row)
        assert cell is not None, row
        assert cell.group(1) == bot_id  # the full id in the title
        shown[bot_id] = cell.group(2)
    return shown


def _who(page: str) -> str:
    found = re.search(r'<span class="who" id="who"[^>]*>([^<]*)</span>', page)
    assert found is not None, "no signed-in name in the header"
    return html.unescape(found.group(1))


def test_the_short_ids_are_the_last_8_and_differ_within_a_minute(manager: Manager) -> None:
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        first, second = _same_minute_pair(api)
        page = client.get("/ui").text
        shown = _shown_ids(page)
        assert shown[first["id"]] == first["id"][-8:]
        assert shown[second["id"]] == second["id"][-8:]
        assert shown[first["id"]] != shown[second["id"]]
        # A nameless bot is called by its short id, on the fleet page and on its own page.
        assert f'href="/ui/bots/{first["id"]}">{first["id"][-8:]}</a>' in page
        own = client.get(f"/ui/bots/{first['id']}").text
        assert f'<span id="bot-name" title="{first["id"]}">{first["id"][-8:]}</span>' in own
        assert f"<title>{first['id'][-8:]} · botfleet</title>" in own


def test_the_search_finds_a_bot_by_its_short_id_or_a_prefix(manager: Manager) -> None:
    user, api = manager.new_user()
    _other, other_api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api), closing(other_api):
        first, second = _same_minute_pair(api)
        theirs = _scheduled(other_api)

        # The short id, as shown (any case, pasted with spaces): straight to the bot's page.
        for typed in (first["id"][-8:], f" {first['id'][-8:].upper()} "):
            found = client.get("/ui", params={"id": typed})
            assert found.status_code == 303, found.text
            assert found.headers["location"] == f"/ui/bots/{first['id']}"
        # A unique prefix too; the whole id as well.
        unique = next(n for n in range(4, 37) if first["id"][:n] != second["id"][:n])
        for typed in (first["id"][:unique], first["id"]):
            found = client.get("/ui", params={"id": typed})
            assert found.headers.get("location") == f"/ui/bots/{first['id']}", typed

        # A prefix both share: both listed, nothing else.
        shared = client.get("/ui", params={"id": first["id"][:8]})
        assert shared.status_code == 200
        assert set(_shown_ids(shared.text)) == {first["id"], second["id"]}
        assert f'value="{first["id"][:8]}"' in shared.text  # the search stays in its box
        # The other filters still apply beside it.
        none_failed = client.get("/ui", params={"id": first["id"][:8], "status": "failed"})
        assert _shown_ids(none_failed.text) == {} and 'id="no-bots"' in none_failed.text
        # The live refresh of a one-match search reads the list, not a redirect.
        live = client.get("/ui", params={"id": first["id"][-8:]}, headers={"X-Botfleet-Live": "1"})
        assert live.status_code == 200 and set(_shown_ids(live.text)) == {first["id"]}

        # Another user's bot is not found; what is no id piece is refused, as the API does.
        foreign = client.get("/ui", params={"id": theirs["id"][-8:]})
        assert foreign.status_code == 200 and _shown_ids(foreign.text) == {}
        bad = client.get("/ui", params={"id": "not-an-id"})
        assert bad.status_code == 422 and 'id="page-error"' in bad.text


def test_the_header_and_the_admin_pages_name_users(manager: Manager) -> None:
    user, api = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    admin, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(client), closing(api), closing(admin):
        bot = _scheduled(api)
        fleet = client.get("/ui").text
        assert _who(fleet) == user["name"]
        assert _who(client.get(f"/ui/bots/{bot['id']}").text) == user["name"]
        assert _who(admin.get("/ui").text) == "admin"

        # The admin's fleet: the user column names the owner, the full id in its title.
        theirs = admin.get("/ui", params={"user_id": user["id"]}).text
        cell = f'<td class="bot-user" title="{user["id"]}">{user["name"]}</td>'
        assert cell in theirs
        # The admin log: the user named, linked, the full id in the title.
        log = admin.get("/ui/admin/audit", params={"user_id": user["id"]}).text
        link = f'<a href="/ui/admin/users/{user["id"]}" title="{user["id"]}">{user["name"]}</a>'
        assert link in log
        assert f'title="user:{user["id"]}">user:{user["id"][-8:]}</td>' in log


def test_the_start_form_takes_key_colon_value_and_warns_on_key_equals_value(
    manager: Manager,
) -> None:
    user, api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        form = {"csrf_token": csrf, "bot": "demo", "config": "{}", "start_at": LATER}
        page = client.get("/ui/bots/new").text
        assert "Labels (one key:value a line)" in page and 'placeholder="team:sales"' in page

        # key:value: the API's syntax, no warning; a value may hold '=' and ':'.
        started = client.post("/ui/bots/new", data={**form, "labels": "team:ui\nq:a=b:c"})
        assert started.status_code == 303, started.text
        assert started.headers["location"].endswith("?notice=started")
        bot_id = started.headers["location"].split("/ui/bots/")[1].split("?")[0]
        assert api.get(f"/bots/{bot_id}").json()["labels"] == {"team": "ui", "q": "a=b:c"}
        shown = client.get(started.headers["location"]).text
        assert "Bot started." in shown and 'id="page-warning"' not in shown

        # key=value: still taken, with a warning on the bot's page saying to write key:value.
        old = client.post("/ui/bots/new", data={**form, "labels": "team=ui\nregion:eu"})
        assert old.status_code == 303, old.text
        bot_id = old.headers["location"].split("/ui/bots/")[1].split("?")[0]
        assert api.get(f"/bots/{bot_id}").json()["labels"] == {"team": "ui", "region": "eu"}
        warned = client.get(old.headers["location"]).text
        assert 'id="page-warning"' in warned
        assert "Labels are written key:value" in warned and "Bot started." in warned

        # Neither: refused, saying which syntax; the warning also shows on a refused form.
        bad = client.post("/ui/bots/new", data={**form, "labels": "no-separator"})
        assert bad.status_code == 422 and "must look like key:value" in bad.text
        refused = client.post(
            "/ui/bots/new", data={**form, "labels": "team=ui", "max_duration_s": "soon"}
        )
        assert refused.status_code == 422 and 'id="page-warning"' in refused.text


def test_a_person_finds_a_bot_by_its_short_id(manager: Manager, browser: Any) -> None:
    """In Chromium: the name in the header, the short id read off the fleet table and typed
    into the search box leads to the bot's page."""
    user, api = manager.new_user()
    with closing(api):
        _first, second = _same_minute_pair(api)
        sign_in(browser, manager.url, user["api_key"])
        assert text_of(browser, "#who") == user["name"]
        short = text_of(browser, f'tr[data-bot-id="{second["id"]}"] .bot-id')
        assert short == second["id"][-8:]
        search = browser.find_element(By.ID, "f-id")
        search.send_keys(short)
        click(browser, "#fleet-filters button")
        wait_for(
            browser,
            lambda d: d.current_url.endswith(f"/ui/bots/{second['id']}"),
            what="the bot's page",
        )
        assert text_of(browser, "#bot-short-id") == short
