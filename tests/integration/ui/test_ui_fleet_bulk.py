"""The fleet page of issue 30: a search by name (a prefix, any case) beside the id search, an
order (name, status, last heartbeat…), the last heartbeat of each bot ("12s ago"), and
checkboxes whose bots one bulk action stops, relaunches, deletes or commands (the operation
`POST /bots/actions` makes), followed on the operation's page until it is done.

Bots here are scheduled far ahead: rows, never processes (a stop ends one at once)."""

from __future__ import annotations

import re
from contextlib import closing
from datetime import timedelta
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.models import Bot, utcnow
from tests.support import ADMIN_TOKEN, Manager
from tests.ui_browser import click, sign_in, text_of, ui_client, wait_for, wait_text

LATER = "2999-01-01T00:00:00Z"
ROW_NAME_RE = re.compile(r'<a class="bot-name" href="/ui/bots/[0-9a-f-]+">([^<]*)</a>')


def _scheduled(api: httpx.Client, **body: Any) -> str:
    answer = api.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER, **body})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _heard(manager: Manager, bot_id: str, seconds_ago: float) -> None:
    """As if the bot's last heartbeat came `seconds_ago` (a scheduled bot sends none)."""
    engine = make_engine(manager.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            row = session.get(Bot, bot_id)
            assert row is not None
            row.last_heartbeat_at = utcnow() - timedelta(seconds=seconds_ago)
    finally:
        engine.dispose()


def test_search_order_heartbeats_and_a_bulk_action_by_form(manager: Manager) -> None:
    user, api = manager.new_user()
    _, other_api = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    admin, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(client), closing(api), closing(other_api), closing(admin):
        ids = {name: _scheduled(api, name=name) for name in ("beta", "Alpha-2", "alpha-1")}
        theirs = _scheduled(other_api, name="alpha-3")
        _heard(manager, ids["beta"], 12)

        page = client.get("/ui").text
        row = page.split(f'<tr data-bot-id="{ids["beta"]}">')[1].split("</tr>")[0]
        assert re.search(r'class="bot-heartbeat" title="[^"]+">1[2-9]s ago<', row), row
        assert '<span class="muted">never</span>' in page  # the others sent none
        found = client.get("/ui", params={"name": "ALPHA", "sort": "name"}).text
        assert ROW_NAME_RE.findall(found) == ["alpha-1", "Alpha-2"]  # only mine, in order
        assert 'value="ALPHA"' in found  # the search stays in its box
        stale_first = client.get("/ui", params={"sort": "-heartbeat"}).text
        assert ROW_NAME_RE.findall(stale_first)[0] == "beta"
        nothing = client.get("/ui", params={"name": "zeta"}).text
        assert 'id="no-bots"' in nothing and "whose name starts with" in nothing

        # The form: the ticked ids (another user's is a failed result, never touched).
        posted = client.post(
            "/ui/bots/actions",
            data={"csrf_token": csrf, "action": "stop", "ids": [ids["beta"], theirs]},
        )
        assert posted.status_code == 303, posted.text
        assert posted.headers["location"].startswith("/ui/operations/")
        operation_id = posted.headers["location"].rsplit("/", 1)[1]
        shown = client.get(posted.headers["location"]).text
        assert "Operation: stop" in shown and 'id="operation-counts"' in shown
        assert api.get(f"/operations/{operation_id}").status_code == 200  # the API's operation
        assert other_api.get(f"/bots/{theirs}").json()["status"] == "requested"

        # Nothing ticked, or no CSRF token: refused, nothing made.
        empty = client.post("/ui/bots/actions", data={"csrf_token": csrf, "action": "stop"})
        assert empty.status_code == 422 and "select the bots" in empty.text
        forged = client.post("/ui/bots/actions", data={"action": "stop", "ids": [ids["beta"]]})
        assert forged.status_code == 403
        # The admin's fleet view offers no bulk form (the API's bulk route wants a user's key).
        assert 'id="bulk-form"' not in admin.get("/ui").text
        for bot_id in [*ids.values()]:
            api.post(f"/bots/{bot_id}/stop")
        other_api.post(f"/bots/{theirs}/stop")


def test_a_person_ticks_bots_and_stops_them_together(manager: Manager, browser: Any) -> None:
    """In Chromium: ticks survive a live update of the table; "select all" ticks the page;
    Stop asks first, then the operation's page follows it until done."""
    user, api = manager.new_user()
    with closing(api):
        first, second, third = (_scheduled(api, name=n) for n in ("one", "two", "three"))
        sign_in(browser, manager.url, user["api_key"])
        wait_text(browser, "#live-status", "live")
        click(browser, f'tr[data-bot-id="{first}"] input.pick-bot')
        wait_text(browser, "#bulk-count", "1 selected")

        # Another bot ends: the live update redraws the table; the tick is still there.
        api.post(f"/bots/{third}/stop")
        wait_text(browser, f'tr[data-bot-id="{third}"] .bot-status', "completed")
        box = browser.find_element(By.CSS_SELECTOR, f'tr[data-bot-id="{first}"] input.pick-bot')
        assert box.is_selected(), "the tick was lost in the live update"
        assert not browser.find_element(By.ID, "bulk-stop").get_attribute("disabled")

        click(browser, "#pick-all")
        wait_text(browser, "#bulk-count", "3 selected")
        click(browser, "#bulk-stop")
        alert = wait_for(browser, lambda d: d.switch_to.alert, what="the confirmation")
        assert alert.text == "Stop 3 bots?"
        alert.accept()
        wait_for(browser, lambda d: "/ui/operations/" in d.current_url, what="the operation")
        wait_text(browser, "#operation-status", "done")
        assert "3 of 3 bots: 3 done, 0 failed" in text_of(browser, "#operation-counts")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == 3
        for bot_id in (first, second):
            assert api.get(f"/bots/{bot_id}").json()["status"] == "completed"
