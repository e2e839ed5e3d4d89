"""The dashboard's Admin and Fleet-health pages in a real Chromium: users with limits and usage,
a key created (shown once) and revoked, the admin log, the health chart and figures; a user
kept out of the admin pages; no console error on any page."""

from __future__ import annotations

import html
import re
import uuid
from contextlib import closing
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.support import ADMIN_TOKEN, Manager, wait_for_command, wait_for_status
from tests.ui_browser import console_errors, sign_in, text_of, ui_client, wait_for, wait_text

XSS = "<img src=x onerror=alert(1)>"


def _start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/bots", json={"bot": "demo", "config": {}, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _api(manager: Manager, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=manager.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _latest_counts(driver: Any) -> list[str]:
    """The last row of the chart's numbers (opened as a person would): time, then counts."""
    driver.find_element(By.CSS_SELECTOR, "#status-chart-card details summary").click()
    rows = driver.find_elements(By.CSS_SELECTOR, "#status-table tbody tr")
    return str(rows[-1].text).split()


def _no_alert(driver: Any) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (reading it is the check)


def test_admin_sees_usage_creates_a_key_once_and_revokes_it(manager: Manager, browser: Any) -> None:
    user, client = manager.new_user(max_bots=4)
    with closing(client):
        bot = _start(client)
        wait_for_status(client, bot["id"], {"active"})

        sign_in(browser, manager.url, ADMIN_TOKEN)
        browser.get(f"{manager.url}/ui/admin")
        row = f'#users tr[data-user-id="{user["id"]}"]'
        assert text_of(browser, f"{row} .usage") == "1 / 4"
        assert "active 1" in text_of(browser, row)
        assert text_of(browser, f"{row} .keys") == "1"
        assert "1000 requests/s" in text_of(browser, "#rate-limits")  # tests.support settings

        browser.find_element(By.CSS_SELECTOR, f"{row} a.user-name").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "create-key"), what="the user page")
        assert text_of(browser, "#user-usage").startswith("1 of 4")
        browser.find_element(By.ID, "key-name").send_keys(XSS)
        Select(browser.find_element(By.ID, "key-scopes")).select_by_value("bots:read")
        browser.find_element(By.ID, "create-key-button").click()
        key = wait_for(browser, lambda d: text_of(d, "#new-key"), what="the new key").strip()
        assert key.startswith("bf_")
        assert user["api_key"] not in browser.page_source  # the first key is never shown again
        key_row = browser.find_element(By.CSS_SELECTOR, f'#keys tr[data-key-prefix="{key[:8]}"]')
        assert XSS in key_row.text  # the name shown as text, not as markup
        assert "bots:read" in key_row.text and "bots:write" not in key_row.text
        key_id = key_row.get_attribute("data-key-id")
        assert not browser.find_elements(By.CSS_SELECTOR, "#keys img")
        _no_alert(browser)
        assert key not in browser.current_url

        browser.refresh()
        wait_for(browser, lambda d: d.find_element(By.ID, "keys"), what="the reloaded page")
        assert not browser.find_elements(By.ID, "new-key")
        assert key not in browser.page_source

        with closing(_api(manager, key)) as api:
            assert api.get("/bots").status_code == 200  # the new key works on the API…
            refused = api.post("/bots", json={"bot": "demo", "config": {}})
            assert refused.json()["detail"]["code"] == "insufficient_scope"  # …and only reads
        ui, _ = ui_client(manager.url, key)  # …and signs in to the dashboard
        ui.close()

        revoke = f'#keys tr[data-key-id="{key_id}"] form.revoke button'
        browser.find_element(By.CSS_SELECTOR, revoke).click()
        wait_for(
            browser,
            lambda d: not d.find_elements(By.CSS_SELECTOR, f'tr[data-key-id="{key_id}"]'),
            what="the revoked key gone from the list",
        )
        with closing(_api(manager, key)) as api:
            assert api.get("/bots").status_code == 401
        with httpx.Client(base_url=manager.url) as anonymous:
            refused = anonymous.post("/ui/sign-in", data={"credential": key})
            assert refused.status_code == 401

        browser.get(f"{manager.url}/ui/admin/audit?user_id={user['id']}")
        actions = [
            (r.get_attribute("data-action"), r.get_attribute("data-target"))
            for r in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
        ]
        assert actions[:2] == [("key_revoked", f"key:{key_id}"), ("key_created", f"key:{key_id}")]
        assert actions[-1] == ("user_created", f"user:{user['id']}")
        assert XSS in text_of(browser, "#audit")  # the key's name, escaped in the change
        _no_alert(browser)

        browser.get(f"{manager.url}/ui/admin/audit?user_id={user['id']}&since=2999-01-01T00:00")
        assert browser.find_elements(By.ID, "no-entries")
        with manager.admin() as admin:  # the page's actions are the API's
            logged = admin.get("/admin/audit", params={"user_id": user["id"]}).json()["items"]
        assert [e["action"] for e in logged][:2] == ["key_revoked", "key_created"]


def test_admin_creates_a_user_changes_its_limit_and_disables_it(
    manager: Manager, browser: Any
) -> None:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    sign_in(browser, manager.url, ADMIN_TOKEN)
    browser.get(f"{manager.url}/ui/admin")
    browser.find_element(By.ID, "u-name").send_keys(name)
    browser.find_element(By.ID, "u-limit").send_keys("2")
    browser.find_element(By.CSS_SELECTOR, "#create-user button").click()
    key = wait_for(browser, lambda d: text_of(d, "#new-key"), what="the first key").strip()
    assert text_of(browser, "#user-name") == name
    assert text_of(browser, "#user-usage").startswith("0 of 2")
    api = _api(manager, key)
    with closing(api):
        assert api.get("/bots").status_code == 200

        limit = browser.find_element(By.ID, "limit")
        limit.clear()
        limit.send_keys("7")
        browser.find_element(By.CSS_SELECTOR, "#update-user button").click()
        wait_for(browser, lambda d: "of 7" in text_of(d, "#user-usage"), what="the new limit")
        assert not browser.find_elements(By.ID, "new-key")

        browser.find_element(By.CSS_SELECTOR, "#toggle-user button").click()
        wait_text(browser, "#user-state", "disabled")
        assert api.get("/bots").status_code == 401
        browser.find_element(By.CSS_SELECTOR, "#toggle-user button").click()
        wait_text(browser, "#user-state", "enabled")
        assert api.get("/bots").status_code == 200

    user_id = text_of(browser, "#user-id")
    browser.get(f"{manager.url}/ui/admin")
    browser.find_element(By.ID, "u-name").send_keys(name)  # taken: refused, message shown
    browser.find_element(By.CSS_SELECTOR, "#create-user button").click()
    error = wait_for(browser, lambda d: text_of(d, "#page-error"), what="an error")
    assert f"a user named '{name}' exists" in error
    with manager.admin() as admin:
        assert admin.get(f"/admin/users/{user_id}").json()["max_concurrent_bots"] == 7
        assert len(admin.get(f"/admin/users/{user_id}/keys").json()["items"]) == 1
        logged = admin.get("/admin/audit", params={"user_id": user_id}).json()["items"]
    changes = [e["change"] for e in logged if e["action"] == "user_updated"]
    assert changes == [
        {"disabled": [True, False]},
        {"disabled": [False, True]},
        {"max_concurrent_bots": [2, 7]},
    ]
    # Chromium logs the refused form's 409 answer as a failed load: expected, not a script error.
    unexpected = [e for e in console_errors(browser) if "status of 409" not in e["message"]]
    assert not unexpected


def test_the_admin_log_pages_and_filters(manager: Manager) -> None:
    user, client = manager.new_user()
    client.close()
    with manager.admin() as admin:
        for n in range(4):
            made = admin.post(f"/admin/users/{user['id']}/keys", json={"name": f"k{n}"})
            assert made.status_code == 201
    ui, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(ui):
        seen: list[str] = []
        url: str | None = f"/ui/admin/audit?user_id={user['id']}&limit=2"
        while url:
            page = ui.get(url)
            assert page.status_code == 200
            targets = re.findall(r'data-target="([^"]+)"', page.text)
            assert 1 <= len(targets) <= 2
            seen += [html.unescape(t) for t in targets]
            found = re.search(r'id="next-page" href="([^"]+)"', page.text)
            url = html.unescape(found.group(1)) if found else None
            assert len(seen) <= 10
        assert len(seen) == 5  # user_created and four key_created, each once
        assert len(set(seen)) == 5 and seen[-1] == f"user:{user['id']}"

        bad = ui.get("/ui/admin/audit", params={"since": "yesterday"})
        assert bad.status_code == 422 and "since must be a time" in bad.text
        future = ui.get("/ui/admin/audit", params={"user_id": user["id"], "since": "2999-01-01"})
        assert future.status_code == 200 and 'id="no-entries"' in future.text


def test_a_user_is_kept_out_of_the_admin_pages(manager: Manager) -> None:
    user, client = manager.new_user()
    client.close()
    ui, csrf = ui_client(manager.url, user["api_key"])
    with closing(ui):
        assert ui.get("/ui/admin").status_code == 403
        assert ui.get("/ui/admin/audit").status_code == 403
        assert ui.get(f"/ui/admin/users/{user['id']}").status_code == 403
        forged = ui.post(f"/ui/admin/users/{user['id']}/keys", data={"csrf_token": csrf})
        assert forged.status_code == 403
    admin_ui, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(admin_ui):  # the admin without the CSRF token: refused as well
        refused = admin_ui.post(f"/ui/admin/users/{user['id']}/keys", data={"name": "x"})
        assert refused.status_code == 403
    with manager.admin() as admin:
        assert len(admin.get(f"/admin/users/{user['id']}/keys").json()["items"]) == 1


def test_health_page_shows_the_chart_and_figures_after_a_bot_ran(
    manager: Manager, browser: Any
) -> None:
    user, client = manager.new_user()
    _, other_client = manager.new_user()
    with closing(client), closing(other_client):
        bot = _start(client)
        wait_for_status(client, bot["id"], {"active"})
        command = client.post(
            f"/bots/{bot['id']}/commands", json={"action": "echo", "payload": {"n": 1}}
        ).json()
        wait_for_command(client, bot["id"], command["id"], {"acked"})
        assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
        wait_for_status(client, bot["id"], {"completed"})
        _start(other_client)  # another user's bot: not in this user's chart

        sign_in(browser, manager.url, user["api_key"])
        browser.get(f"{manager.url}/ui/health")
        bars = browser.find_elements(By.CSS_SELECTOR, "#status-chart rect[data-status]")
        assert {b.get_attribute("data-status") for b in bars} >= {"completed"}
        cells = _latest_counts(browser)
        assert cells[1:] == ["0", "0", "0", "0", "0", "1", "0"]  # queued … failed, now

        launch, round_trip = browser.find_elements(By.CSS_SELECTOR, "#latencies tr.latency")
        for row in (launch, round_trip):
            assert int(row.get_attribute("data-count")) >= 1
            quantiles = row.find_elements(By.CSS_SELECTOR, "td.percentile")
            assert [q.get_attribute("data-q") for q in quantiles] == ["p50", "p90", "p99"]
            assert all(q.text.endswith(" s") for q in quantiles)

        def reconciler_ran(d: Any) -> bool:
            d.refresh()
            row = d.find_element(By.CSS_SELECTOR, '#loops tr[data-loop="reconciler"]')
            return row.get_attribute("data-state") == "ok" and "ago" in row.text

        wait_for(browser, reconciler_ran, what="the reconciler's last run")
        assert browser.find_elements(By.CSS_SELECTOR, '#loops tr[data-loop="webhooks"]')

        sign_in(browser, manager.url, ADMIN_TOKEN)
        browser.get(f"{manager.url}/ui/health")
        counts = [int(c) for c in _latest_counts(browser)[1:]]
        assert sum(counts) >= 2  # the admin sees the other user's bot too
