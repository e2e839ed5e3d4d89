"""The dashboard in a real Chromium, as an operator uses it: sign in, start a bot from the form,
watch it go active without a reload, reconfigure it (a JSON editor that refuses bad JSON),
run a custom command and read its result, stop it and see `completed`; the fleet page
updating live; and a bot whose every string is a script payload running no script.

Any SEVERE console entry fails a test (tests/ui_browser.py). Set BOTFLEET_UI_SCREENSHOTS to a
folder (e.g. `docs`) to save the fleet and bot pages there as ui-fleet.png and ui-bot.png.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import closing
from pathlib import Path
from typing import Any

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.models import Bot
from botfleet.manager.core.models import utcnow as now
from tests.support import Manager, RedisServer, running_manager, wait_for_status
from tests.ui_browser import click, console_errors, sign_in, text_of, wait_for, wait_text

MARK = "window.__botfleetNoReload = 'still here'"
MARKED = "return window.__botfleetNoReload === 'still here'"


def _fill(driver: Any, element_id: str, text: str) -> None:
    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(text)


def _command_row(driver: Any, action: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'#commands tr[data-action="{action}"]')


def _screenshot(driver: Any, name: str) -> None:
    """The whole page, when BOTFLEET_UI_SCREENSHOTS names a folder (README's pictures)."""
    folder = os.environ.get("BOTFLEET_UI_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(int(height) + 120, 600))
    try:
        driver.save_screenshot(str(Path(folder) / name))
    finally:
        driver.set_window_size(size["width"], size["height"])


def test_start_watch_reconfigure_command_stop(manager: Manager, browser: Any) -> None:
    user, api = manager.new_user()
    with closing(api):
        sign_in(browser, manager.url, user["api_key"])
        browser.get(f"{manager.url}/ui/bots/new")
        _fill(browser, "name", "standup-ui")
        _fill(browser, "config", '{"lang": "en", "n": 3, "report_every_s": 1}')
        _fill(browser, "labels", "team:sales\nregion:eu")
        click(browser, "#start")

        wait_for(browser, lambda d: "/ui/bots/" in d.current_url and "new" not in d.current_url)
        bot_id = browser.current_url.split("/ui/bots/")[1].split("?")[0]
        browser.execute_script(MARK)
        wait_text(browser, "#bot-status", "active", timeout=45)  # live: no reload
        assert browser.execute_script(MARKED), "the page reloaded to show the change"
        assert "team: sales" in text_of(browser, "#labels")
        assert api.get(f"/bots/{bot_id}").json()["labels"] == {"team": "sales", "region": "eu"}

        # The editor refuses what is not a JSON object, before anything is sent.
        _fill(browser, "config-editor", '{"lang": "de",')
        click(browser, "#reconfigure")
        wait_text(browser, '[data-error-for="config-editor"]', "not valid JSON")
        assert browser.execute_script(MARKED), "an invalid config was submitted"
        _fill(browser, "config-editor", "[1, 2]")
        click(browser, "#reconfigure")
        wait_text(browser, '[data-error-for="config-editor"]', "must be a JSON object")
        assert browser.execute_script(MARKED), "a JSON array was submitted as a config"
        assert api.get(f"/bots/{bot_id}/commands").json()["items"] == []

        _fill(browser, "config-editor", '{"lang": "de", "n": 3, "report_every_s": 1}')
        click(browser, "#reconfigure")
        wait_text(browser, ".flash.notice", "Reconfigure sent")
        browser.execute_script(MARK)
        wait_for(
            browser,
            lambda d: (
                _command_row(d, "reconfigure").find_element(By.CLASS_NAME, "command-status").text
                == "acked"
            ),
            what="the reconfigure acked",
        )
        wait_text(browser, "#config-now", '"de"')
        config = api.get(f"/bots/{bot_id}").json()["config"]
        assert config == {"lang": "de", "n": 3, "report_every_s": 1}

        # A custom command (the kind's first, `echo`: a JSON payload), and its result.
        picked = Select(browser.find_element(By.ID, "command-pick")).first_selected_option
        assert picked.get_attribute("value") == "echo"
        _fill(browser, "command-payload", '{"text": "hello from the dashboard"}')
        click(browser, "#send-command")
        wait_text(browser, ".flash.notice", "Command sent")
        browser.execute_script(MARK)
        wait_for(
            browser,
            lambda d: (
                "hello from the dashboard"
                in _command_row(d, "echo").find_element(By.CLASS_NAME, "command-result").text
            ),
            what="the echo command's result",
        )
        status, result = wait_for(  # read in one go: a live update may replace the row
            browser,
            lambda d: (
                text_of(d, '#commands tr[data-action="echo"] .command-status'),
                json.loads(text_of(d, '#commands tr[data-action="echo"] .command-result')),
            ),
            what="the echo row",
        )
        assert (status, result) == ("acked", {"text": "hello from the dashboard"})
        assert browser.execute_script(MARKED), "the result needed a reload"

        # An unknown action (demo takes any: "another action"): the bot's error shows on the row.
        Select(browser.find_element(By.ID, "command-pick")).select_by_value("-other")
        wait_for(browser, lambda d: "command=-other" in d.current_url, what="the free form")
        _fill(browser, "command-action", "dance")
        _fill(browser, "command-payload", "{}")
        click(browser, "#send-command")
        wait_for(
            browser,
            lambda d: (
                "unknown_action"
                in _command_row(d, "dance").find_element(By.CLASS_NAME, "command-result").text
                or "unknown" in _command_row(d, "dance").text
            ),
            what="the unknown action's error",
        )

        wait_text(browser, "#logs", "demo bot reconfigured")  # the logs follow live
        wait_text(browser, "#report", '"n":')  # the bot's latest report, live too
        _screenshot(browser, "ui-bot.png")

        click(browser, "#stop")
        wait_text(browser, ".flash.notice", "Stop requested")
        browser.execute_script(MARK)
        wait_text(browser, "#bot-status", "completed", timeout=45)
        assert browser.execute_script(MARKED)
        assert "stop_requested" in text_of(browser, "#transitions")
        assert browser.find_elements(By.ID, "relaunch")  # an ended bot offers a relaunch


def test_the_fleet_page_follows_the_fleet_live(manager: Manager, browser: Any) -> None:
    user, api = manager.new_user()
    with closing(api):
        sign_in(browser, manager.url, user["api_key"])
        assert "No bots here yet" in text_of(browser, "main")
        browser.execute_script(MARK)
        wait_text(browser, "#live-status", "live")
        made = [
            api.post(
                "/bots",
                json={"bot": "demo", "name": f"live-{i}", "config": {}, "labels": {"n": str(i)}},
            ).json()
            for i in range(3)
        ]
        for bot in made:
            wait_for_status(api, bot["id"], {"active"})
        for bot in made:
            wait_for(
                browser,
                lambda d, bot=bot: (
                    d.find_element(
                        By.CSS_SELECTOR, f'tr[data-bot-id="{bot["id"]}"] .bot-status'
                    ).text
                    == "active"
                ),
                what=f"{bot['name']} active on the fleet page",
            )
        wait_text(browser, "#count-active", "3")
        assert browser.execute_script(MARKED), "the fleet page reloaded"

        api.post(f"/bots/{made[0]['id']}/stop")
        wait_for_status(api, made[0]["id"], {"completed"})
        wait_text(browser, f'tr[data-bot-id="{made[0]["id"]}"] .bot-status', "completed")
        wait_text(browser, "#count-completed", "1")
        assert browser.execute_script(MARKED), "the fleet page reloaded"
        _screenshot(browser, "ui-fleet.png")

        # Filters: by status, by label.
        Select(browser.find_element(By.ID, "f-status")).select_by_value("active")
        browser.find_element(By.CSS_SELECTOR, "#fleet-filters button").click()
        wait_for(browser, lambda d: "status=active" in d.current_url)
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.bot-name")]
        assert sorted(names) == ["live-1", "live-2"]
        browser.get(f"{manager.url}/ui?label=n:2")
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.bot-name")]
        assert names == ["live-2"]
        for bot in made[1:]:
            api.post(f"/bots/{bot['id']}/stop")


XSS = "<img src=x onerror=\"window.__xss='name';alert(1)\">"
XSS_LABEL = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>window.__xss='script';alert(2)</script>"


def test_a_bot_made_of_script_payloads_runs_no_script(manager: Manager, browser: Any) -> None:
    user, api = manager.new_user()
    with closing(api):
        answer = api.post(
            "/bots",
            json={
                "bot": "demo",
                "name": XSS,
                "config": {"note": XSS_SCRIPT},  # the demo bot prints its config: a log line
                "labels": {"evil": XSS_LABEL},
            },
        )
        assert answer.status_code == 201, answer.text
        bot_id = answer.json()["id"]
        wait_for_status(api, bot_id, {"active"})
        echo = api.post(
            f"/bots/{bot_id}/commands", json={"action": "echo", "payload": {"say": XSS_SCRIPT}}
        )
        assert echo.status_code == 202, echo.text
        # A report is whatever the bot sends: stored here as a bot would have it.
        # A write unit like the manager's (`transaction`: BEGIN IMMEDIATE on SQLite, so it
        # waits for the manager's writers instead of failing with "database is locked").
        engine = make_engine(manager.database_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                row = session.get(Bot, bot_id)
                assert row is not None
                row.report = {"html": XSS_LABEL, "script": XSS_SCRIPT}
                row.reported_at = now()
        finally:
            engine.dispose()

        sign_in(browser, manager.url, user["api_key"])
        assert XSS in text_of(browser, "#bots")  # shown as text, not markup
        assert XSS_LABEL in text_of(browser, "#bots")
        browser.get(f"{manager.url}/ui/bots/{bot_id}")
        wait_text(browser, "#logs", XSS_SCRIPT)  # the log line, as text
        wait_for(
            browser,
            lambda d: XSS_SCRIPT in _command_row(d, "echo").text,
            what="the echo result",
        )
        assert XSS_SCRIPT in text_of(browser, "#report")
        assert XSS in text_of(browser, "#bot-name")
        injected = browser.execute_script(
            "return document.querySelectorAll("
            "'img[src=\"x\"], main script, [onerror], [onload]').length"
        )
        assert injected == 0, "bot-controlled text became markup"
        assert browser.execute_script("return window.__xss") is None
        try:
            alert = browser.switch_to.alert
        except NoAlertPresentException:
            alert = None
        assert alert is None, "a script opened an alert"
        api.post(f"/bots/{bot_id}/stop")


def test_the_fleet_page_resumes_after_the_manager_comes_back(
    tmp_path: Path, redis_server: RedisServer, browser: Any
) -> None:
    """The event stream drops (the manager restarts); the page reconnects by itself and shows
    what happened meanwhile, still without a reload."""
    with running_manager(tmp_path, redis_server.url) as own:
        user, api = own.new_user()
        with closing(api):
            sign_in(browser, own.url, user["api_key"])
            wait_text(browser, "#live-status", "live")
            browser.execute_script(MARK)
            own.stop(signal.SIGKILL)  # the connection drops, as in a crash or a network cut
            wait_text(browser, "#live-status", "reconnecting")
            own.start()
            bot = api.post("/bots", json={"bot": "demo", "name": "after-restart", "config": {}})
            assert bot.status_code == 201, bot.text
            wait_for_status(api, bot.json()["id"], {"active"})
            wait_for(
                browser,
                lambda d: (
                    d.find_element(
                        By.CSS_SELECTOR, f'tr[data-bot-id="{bot.json()["id"]}"] .bot-status'
                    ).text
                    == "active"
                ),
                what="the new bot, live, after the reconnect",
            )
            wait_text(browser, "#live-status", "live")
            assert browser.execute_script(MARKED), "the page reloaded"
            # The outage shows as failed connections, and as nothing else (no script error).
            outage = console_errors(browser)
            assert all(e["source"] == "network" for e in outage), outage
            api.post(f"/bots/{bot.json()['id']}/stop")
            browser.get("about:blank")  # leave before this manager stops for good
