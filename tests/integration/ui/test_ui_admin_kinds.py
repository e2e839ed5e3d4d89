"""The dashboard's Kinds pages (issue 28, point 1): the admin registers a kind from its JSON
document, sees it listed with its live bots per version, registers a new version (a running bot
keeps its own), and retires it (no longer offered by the start form); refusals show the API's
code and paths; kind text is escaped; a user's session is kept out; every change is in the
admin log as the API's are.

Plain HTTP (signed-in httpx clients) against the process-backend manager; one real Chromium
run of the register → new version → retire forms.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from contextlib import closing
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from tests.support import ADMIN_TOKEN, Manager, wait_for_status
from tests.ui_browser import sign_in, text_of, ui_client, wait_for

DEMO_CLASS = "botfleet.runtime.bots.demo:DemoBot"
XSS = "<script>alert('kind')</script><img src=x onerror=alert(2)>"


def _name() -> str:
    return f"uik-{uuid.uuid4().hex[:8]}"


def _document(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "run": {"python": DEMO_CLASS},
        "description": "a kind from the dashboard",
        "config_schema": {"type": "object", "properties": {"greeting": {"type": "string"}}},
        **extra,
    }


def _register(ui: httpx.Client, csrf: str, document: str) -> httpx.Response:
    return ui.post("/ui/admin/kinds", data={"csrf_token": csrf, "document": document})


def _row(page: str, name: str) -> str:
    found = re.search(rf'<tr data-kind="{re.escape(name)}".*?</tr>', page, re.S)
    assert found is not None, f"kind {name} not listed"
    return found.group(0)


def _offered(ui: httpx.Client) -> list[str]:
    page = ui.get("/ui/bots/new")
    assert page.status_code == 200, page.text
    select = re.search(r'<select id="kind".*?</select>', page.text, re.S)
    assert select is not None
    return [html.unescape(v) for v in re.findall(r'<option value="([^"]+)"', select.group(0))]


def test_register_update_keeps_a_running_bots_version_then_retire(manager: Manager) -> None:
    name = _name()
    user, client = manager.new_user()
    ui, csrf = ui_client(manager.url, ADMIN_TOKEN)
    user_ui, _ = ui_client(manager.url, user["api_key"])
    with closing(client), closing(ui), closing(user_ui):
        made = _register(ui, csrf, json.dumps(_document(name)))
        assert made.status_code == 303, made.text
        assert made.headers["location"] == f"/ui/admin/kinds/{name}?notice=registered"

        listed = ui.get("/ui/admin/kinds")
        assert listed.status_code == 200
        row = _row(listed.text, name)
        assert 'data-version="1"' in row and 'data-retired="no"' in row
        assert "a kind from the dashboard" in row
        assert 'data-kind="demo"' in listed.text  # the built-ins are listed too
        assert name in _offered(user_ui)

        started = client.post("/bots", json={"bot": name, "config": {"greeting": "hi"}})
        assert started.status_code == 201, started.text
        bot = started.json()
        wait_for_status(client, bot["id"], {"active"})
        row = _row(ui.get("/ui/admin/kinds").text, name)
        assert "v1: 1" in row  # one live bot, on version 1

        page = ui.get(f"/ui/admin/kinds/{name}")
        textarea = re.search(
            r'<textarea id="version-document"[^>]*>(.*?)</textarea>', page.text, re.S
        )
        assert textarea is not None
        prefilled = json.loads(html.unescape(textarea.group(1)))
        assert prefilled["run"] == {"python": DEMO_CLASS} and "name" not in prefilled
        prefilled["description"] = "version two"
        updated = ui.post(
            f"/ui/admin/kinds/{name}/versions",
            data={"csrf_token": csrf, "document": json.dumps(prefilled)},
        )
        assert updated.status_code == 303, updated.text

        page = ui.get(f"/ui/admin/kinds/{name}")
        assert re.search(r'<tr data-version="2" data-live="0"', page.text)
        assert re.search(r'<tr data-version="1" data-live="1"', page.text)
        assert 'data-version="2"' in _row(ui.get("/ui/admin/kinds").text, name)
        assert client.get(f"/bots/{bot['id']}").json()["kind_version"] == 1  # kept its own
        with manager.admin() as admin:
            assert admin.get(f"/kinds/{name}").json()["version"] == 2

        unconfirmed = ui.post(f"/ui/admin/kinds/{name}/retire", data={"csrf_token": csrf})
        assert unconfirmed.status_code == 422 and 'data-path="/confirm"' in unconfirmed.text
        retired = ui.post(
            f"/ui/admin/kinds/{name}/retire", data={"csrf_token": csrf, "confirm": name}
        )
        assert retired.status_code == 303, retired.text
        assert 'data-retired="yes"' in _row(ui.get("/ui/admin/kinds").text, name)
        assert name not in _offered(user_ui)
        assert client.get(f"/bots/{bot['id']}").json()["status"] == "active"  # runs on
        assert client.post("/bots/" + bot["id"] + "/stop").status_code in (200, 202)

        with manager.admin() as admin:
            logged = admin.get("/admin/audit", params={"limit": 200}).json()["items"]
        mine = [e["action"] for e in logged if e["target"] == f"kind:{name}"]
        assert mine == ["kind_retired", "kind_updated", "kind_registered"]


def test_a_user_session_is_kept_out_of_the_kinds_pages(manager: Manager) -> None:
    name = _name()
    user, client = manager.new_user()
    client.close()
    ui, csrf = ui_client(manager.url, user["api_key"])
    with closing(ui):
        assert ui.get("/ui/admin/kinds").status_code == 403
        assert ui.get("/ui/admin/kinds/demo").status_code == 403
        forged = _register(ui, csrf, json.dumps(_document(name)))
        assert forged.status_code == 403
    with httpx.Client(base_url=manager.url) as anonymous:
        assert anonymous.get("/ui/admin/kinds").status_code == 303  # sign in first
    admin_ui, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(admin_ui):  # the admin without the CSRF token: refused as well
        assert admin_ui.post("/ui/admin/kinds", data={"document": "{}"}).status_code == 403
        assert admin_ui.get(f"/ui/admin/kinds/{name}").status_code == 404
    with manager.admin() as admin:
        assert admin.get(f"/kinds/{name}").status_code == 404


def test_refusals_show_the_apis_code_and_paths(manager: Manager) -> None:
    name = _name()
    ui, csrf = ui_client(manager.url, ADMIN_TOKEN)
    with closing(ui):
        bad_schema = json.dumps(_document(name, config_schema={"type": "nonsense"}))
        refused = _register(ui, csrf, bad_schema)
        assert refused.status_code == 422
        assert 'id="refusal-code">invalid_schema<' in refused.text
        assert 'data-path="/config_schema/type"' in refused.text
        kept = re.search(r'<textarea id="kind-document"[^>]*>(.*?)</textarea>', refused.text, re.S)
        assert kept is not None and html.unescape(kept.group(1)) == bad_schema  # kept filled

        upload = ui.post(
            "/ui/admin/kinds",
            data={"csrf_token": csrf},
            files={"document_file": ("kind.json", b'{"name": "x",', "application/json")},
        )
        assert upload.status_code == 422 and 'id="refusal-code">invalid_json<' in upload.text

        missing_run = _register(ui, csrf, json.dumps({"name": name}))
        assert missing_run.status_code == 422
        assert 'id="refusal-code">invalid_input<' in missing_run.text
        assert 'data-path="/run"' in missing_run.text

        good = json.dumps(_document(name)).encode()
        made = ui.post(
            "/ui/admin/kinds",
            data={"csrf_token": csrf},
            files={"document_file": ("kind.json", good, "application/json")},
        )
        assert made.status_code == 303, made.text
        again = _register(ui, csrf, good.decode())
        assert again.status_code == 409 and 'id="refusal-code">kind_exists<' in again.text

        builtin = ui.post(
            "/ui/admin/kinds/demo/versions",
            data={"csrf_token": csrf, "document": json.dumps({"run": {"python": DEMO_CLASS}})},
        )
        assert builtin.status_code == 409 and "kind_builtin" in builtin.text
        with manager.admin() as admin:
            assert admin.get(f"/kinds/{name}").json()["version"] == 1


def test_kind_text_is_escaped(manager: Manager) -> None:
    name = _name()
    document = _document(
        name,
        description=XSS,
        config_schema={"type": "object", "properties": {"x": {"type": "string", "title": XSS}}},
    )
    with manager.admin() as admin:
        assert admin.post("/admin/kinds", json=document).status_code == 201
    ui, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(ui):
        for url in ("/ui/admin/kinds", f"/ui/admin/kinds/{name}"):
            page = ui.get(url)
            assert page.status_code == 200
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            assert "&lt;script&gt;alert(" in page.text


def test_the_kinds_forms_in_a_browser(manager: Manager, browser: Any) -> None:
    name = _name()
    sign_in(browser, manager.url, ADMIN_TOKEN)
    browser.get(f"{manager.url}/ui/admin")
    browser.find_element(By.ID, "kinds-link").click()
    textarea = wait_for(browser, lambda d: d.find_element(By.ID, "kind-document"), what="form")
    textarea.send_keys(json.dumps(_document(name, description=XSS)))
    browser.find_element(By.ID, "register-kind-button").click()
    wait_for(browser, lambda d: text_of(d, "#kind-name") == name, what="the kind's page")
    assert text_of(browser, "#kind-description") == XSS  # shown as text

    browser.find_element(By.ID, "new-version-button").click()  # the prefilled document as is
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-version="2"]'))

    browser.find_element(By.ID, "retire-confirm").send_keys(name)
    browser.find_element(By.ID, "retire-button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "kind-retired"), what="retired")
    assert not browser.find_elements(By.ID, "retire-kind")
