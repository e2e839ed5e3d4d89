"""The dashboard's defences, seen from outside with plain HTTP: the session cookie's flags,
CSRF refusals, the Content Security Policy, where the key travels (never in a URL or the
server's log), a revoked key ending the session, and one user's bots hidden from another."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from tests.support import ADMIN_TOKEN, Manager, RedisServer, running_manager, wait_for_status
from tests.ui_browser import ui_client


def _start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/bots", json={"bot": "demo", "config": {}, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_session_cookie_is_httponly_strict_and_scoped(manager: Manager) -> None:
    user, _ = manager.new_user()
    with httpx.Client(base_url=manager.url) as client:
        answer = client.post("/ui/sign-in", data={"credential": user["api_key"]})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/ui" in cookie
    assert "secure" not in cookie  # plain http here; https requests get Secure
    assert user["api_key"].lower() not in cookie  # sealed, not the key itself


def test_a_wrong_key_is_refused_and_pages_need_a_session(manager: Manager) -> None:
    with httpx.Client(base_url=manager.url) as client:
        refused = client.post("/ui/sign-in", data={"credential": "bf_not-a-key"})
        assert refused.status_code == 401
        assert "unknown or revoked" in refused.text
        assert "set-cookie" not in refused.headers
        for path in ("/ui", "/ui/bots/new", "/ui/bots/some-id"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/ui/sign-in"


def test_every_page_has_a_strict_content_security_policy(manager: Manager) -> None:
    user, _ = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client):
        for path in ("/ui/sign-in", "/ui", "/ui/bots/new", "/ui/static/ui.css"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
        assert "<script>" not in client.get("/ui").text  # no inline script anywhere


def test_state_changing_forms_need_the_csrf_token(manager: Manager) -> None:
    user, api = manager.new_user()
    bot = _start(api)
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        for form in ({}, {"csrf_token": "0" * 64}):
            refused = client.post(f"/ui/bots/{bot['id']}/stop", data=form)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        refused = client.post("/ui/bots/new", data={"bot": "demo", "config": "{}"})
        assert refused.status_code == 403
        assert api.get(f"/bots/{bot['id']}").json()["status"] in {"requested", "starting", "active"}
        assert len(api.get("/bots").json()["items"]) == 1  # nothing started without the token

        done = client.post(f"/ui/bots/{bot['id']}/stop", data={"csrf_token": csrf})
        assert done.status_code == 303
        wait_for_status(api, bot["id"], {"completed", "failed"})


def test_the_key_never_appears_in_a_url_or_the_server_log(manager: Manager) -> None:
    user, _ = manager.new_user()
    client, _ = ui_client(manager.url, user["api_key"])
    with closing(client):
        page = client.get("/ui")
        assert user["api_key"] not in str(page.url)
        assert user["api_key"] not in page.text
        assert all(user["api_key"] not in str(r.url) for r in page.history)
    with httpx.Client(base_url=manager.url) as anonymous:  # a failed sign-in is not logged
        anonymous.post("/ui/sign-in", data={"credential": user["api_key"] + "x"})
    log = manager.log_path.read_text()
    assert "Application startup complete" in log  # the server's whole output
    assert user["api_key"] not in log


def test_revoking_the_key_ends_the_session_at_once(manager: Manager) -> None:
    user, _ = manager.new_user()
    with manager.admin() as admin:
        made = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "browser"})
        assert made.status_code == 201, made.text
        key = made.json()
        client, _ = ui_client(manager.url, key["api_key"])
        with closing(client):
            assert client.get("/ui").status_code == 200
            gone = admin.delete(f"/admin/users/{user['id']}/keys/{key['id']}")
            assert gone.status_code == 204
            answer = client.get("/ui")
            assert answer.status_code == 303
            assert answer.headers["location"] == "/ui/sign-in"
            assert client.get("/ui/events").status_code == 303


def test_one_user_never_sees_another_users_bot(manager: Manager) -> None:
    _, owner_api = manager.new_user()
    other, _ = manager.new_user()
    bot = _start(owner_api, name="owners-secret-bot")
    client, csrf = ui_client(manager.url, other["api_key"])
    with closing(client), closing(owner_api):
        assert "owners-secret-bot" not in client.get("/ui").text
        page = client.get(f"/ui/bots/{bot['id']}")
        assert page.status_code == 404
        assert "owners-secret-bot" not in page.text
        stop = client.post(f"/ui/bots/{bot['id']}/stop", data={"csrf_token": csrf})
        assert stop.status_code == 404
        assert client.get(f"/ui/bots/{bot['id']}/logs").status_code == 404
        assert owner_api.get(f"/bots/{bot['id']}").json()["status"] != "stopping"
        owner_api.post(f"/bots/{bot['id']}/stop")


def test_the_admin_sees_every_users_bots(manager: Manager) -> None:
    _, api = manager.new_user()
    bot = _start(api, name="seen-by-admin")
    client, _ = ui_client(manager.url, ADMIN_TOKEN)
    with closing(client), closing(api):
        assert "seen-by-admin" in client.get("/ui").text
        assert client.get(f"/ui/bots/{bot['id']}").status_code == 200
        api.post(f"/bots/{bot['id']}/stop")


def test_the_dashboard_spends_the_keys_rate_limit(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Pages count against the signed-in key's budget, as API calls do: no way around it."""
    limits = {"BOTFLEET_RATE_LIMIT_PER_S": "0.2", "BOTFLEET_RATE_LIMIT_BURST": "6"}
    with running_manager(tmp_path, redis_server.url, extra_env=limits) as own:
        user, api = own.new_user()
        client, _ = ui_client(own.url, user["api_key"])  # two requests of the budget
        with closing(client), closing(api):
            answers = [client.get("/ui").status_code for _ in range(8)]
            assert answers[:4] == [200] * 4
            assert answers[-1] == 429
            limited = client.get("/ui")
            assert "too many requests" in limited.text
            assert int(limited.headers["retry-after"]) >= 1
            assert api.get("/bots").status_code == 429  # the same budget as the API's


def test_signing_out_ends_the_session(manager: Manager) -> None:
    user, _ = manager.new_user()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client):
        assert client.post("/ui/sign-out").status_code == 403  # CSRF applies here too
        out = client.post("/ui/sign-out", data={"csrf_token": csrf})
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/sign-in"
        assert (
            'botfleet_ui=""' in out.headers["set-cookie"]
            or "Max-Age=0" in out.headers["set-cookie"]
        )
        answer = client.get("/ui")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"
