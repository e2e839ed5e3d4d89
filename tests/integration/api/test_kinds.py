"""Bot kinds through the API: an operator registers one, users start its bots by name, and what
they send is checked against it before anything is stored (422 with the JSON pointer of each
error); a new version leaves running bots on theirs; a retired kind starts nothing new; an
`exec` kind runs its own argv; a kind whose virtualenv cannot be built fails its bot clearly."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import httpx

from tests.support import Manager, wait_for_command, wait_for_status

DEMO_CLASS = "botfleet.runtime.bots.demo:DemoBot"


def kind_body(name: str, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "run": {"python": DEMO_CLASS},
        "description": "a greeter",
        "config_schema": {
            "type": "object",
            "required": ["greeting"],
            "properties": {
                "greeting": {"type": "string", "minLength": 1},
                "count": {"type": "integer", "minimum": 1},
                "nested": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
            },
        },
        "secrets": ["api_token"],
        "commands": {
            "echo": {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
            }
        },
        "restart": {"max_retries": 2, "backoff_s": 0.5},
        "resources": {"cpu": 0.5, "memory_mb": 256},
        **more,
    }


def detail(response: httpx.Response) -> dict[str, Any]:
    return response.json()["detail"]


def paths(response: httpx.Response) -> list[str]:
    return [e["path"] for e in detail(response)["errors"]]


def start(client: httpx.Client, kind: str, **body: Any) -> httpx.Response:
    body = {"config": {"greeting": "hi"}, "secrets": {"api_token": "t0ken"}, **body}
    return client.post("/bots", json={"bot": kind, **body})


def test_a_kind_from_registration_to_retirement(manager: Manager) -> None:
    name = f"greeter-{uuid.uuid4().hex[:8]}"
    _, client = manager.new_user()
    with manager.admin() as admin:
        created = admin.post("/admin/kinds", json=kind_body(name))
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1 and created.json()["run"] == {"python": DEMO_CLASS}
        again = admin.post("/admin/kinds", json=kind_body(name))
        assert again.status_code == 409 and detail(again)["code"] == "kind_exists"

    listed = client.get("/kinds", params={"limit": 1000}).json()["items"]
    by_name = {k["name"]: k for k in listed}
    assert {"demo", "telegram", name} <= set(by_name)
    assert by_name[name]["secrets"] == ["api_token"] and "run" not in by_name[name]
    assert by_name["telegram"]["secrets"] == ["bot_token"] and by_name["telegram"]["builtin"]
    assert client.get(f"/kinds/{name}").json()["commands"]["echo"]["required"] == ["text"]

    # Shape checked before anything is stored: each error with its JSON pointer.
    wrong = start(client, name, config={"count": 0, "nested": {"deep": "yes"}})
    assert wrong.status_code == 422 and detail(wrong)["code"] == "invalid_config"
    assert paths(wrong) == ["/config/greeting", "/config/count", "/config/nested/deep"], paths(
        wrong
    )
    missing = start(client, name, secrets={})
    assert missing.status_code == 422 and detail(missing)["code"] == "missing_secret"
    assert paths(missing) == ["/secrets/api_token"]
    assert client.get("/bots").json()["items"] == [], "nothing was stored"

    bot = start(client, name)
    assert bot.status_code == 201, bot.text
    bot_id = bot.json()["id"]
    assert bot.json()["kind_version"] == 1
    assert bot.json()["restart"]["max_retries"] == 2, "the kind's restart policy applies"
    wait_for_status(client, bot_id, {"active"})

    unknown = client.post(f"/bots/{bot_id}/commands", json={"action": "dance", "payload": {}})
    assert unknown.status_code == 422 and detail(unknown)["code"] == "unknown_action"
    bad = client.post(f"/bots/{bot_id}/commands", json={"action": "echo", "payload": {"t": 1}})
    assert bad.status_code == 422 and detail(bad)["code"] == "invalid_payload"
    assert paths(bad) == ["/payload/text"]
    assert client.get(f"/bots/{bot_id}/commands").json()["items"] == [], "none stored"
    echo = client.post(
        f"/bots/{bot_id}/commands", json={"action": "echo", "payload": {"text": "x"}}
    )
    assert echo.status_code == 202, echo.text
    answered = wait_for_command(client, bot_id, echo.json()["id"], {"acked", "failed"})
    assert answered["result"] == {"text": "x"}

    patched = client.patch(f"/bots/{bot_id}/config", json={"config": {"greeting": None}})
    assert patched.status_code == 422 and paths(patched) == ["/config/greeting"]
    replaced = client.put(f"/bots/{bot_id}/config", json={"config": {"greeting": 5}})
    assert replaced.status_code == 422 and paths(replaced) == ["/config/greeting"]
    assert client.patch(f"/bots/{bot_id}/config", json={"config": {"count": 3}}).status_code == 202
    secrets = client.put(f"/bots/{bot_id}/secrets", json={"other": "x"})
    assert secrets.status_code == 422 and detail(secrets)["code"] == "missing_secret"

    # Version 2 drops the required greeting: the running bot keeps version 1 and its checks.
    v2 = kind_body(name, config_schema={"type": "object"}, secrets=[])
    del v2["name"]
    with manager.admin() as admin:
        updated = admin.put(f"/admin/kinds/{name}", json=v2)
        assert updated.status_code == 200 and updated.json()["version"] == 2, updated.text
    assert client.get(f"/bots/{bot_id}").json()["kind_version"] == 1
    still = client.put(f"/bots/{bot_id}/config", json={"config": {}})
    assert still.status_code == 422, "the running bot is checked against its own version"
    newer = client.post("/bots", json={"bot": name, "config": {}})
    assert newer.status_code == 201 and newer.json()["kind_version"] == 2, newer.text
    assert client.post(f"/bots/{newer.json()['id']}/stop").status_code == 202

    with manager.admin() as admin:
        assert admin.delete(f"/admin/kinds/{name}").status_code == 204
        assert admin.delete(f"/admin/kinds/{name}").status_code == 204, "idempotent"
        actions = [
            (a["action"], a["change"].get("version"))
            for a in admin.get("/admin/audit").json()["items"]
            if a["target"] == f"kind:{name}"
        ]
    assert actions == [("kind_retired", 2), ("kind_updated", 2), ("kind_registered", 1)]
    refused = client.post("/bots", json={"bot": name, "config": {}})
    assert refused.status_code == 409 and detail(refused)["code"] == "kind_retired"
    assert name not in {k["name"] for k in client.get("/kinds").json()["items"]}
    assert client.get(f"/kinds/{name}").status_code == 409
    assert client.get(f"/bots/{bot_id}").json()["status"] == "active", "running bots run on"
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    wait_for_status(client, bot_id, {"completed", "failed"})
    relaunch = client.post(f"/bots/{bot_id}/relaunch")
    assert relaunch.status_code == 409 and detail(relaunch)["code"] == "kind_retired"


def test_registration_is_checked_and_admin_only(manager: Manager) -> None:
    name = f"checked-{uuid.uuid4().hex[:8]}"
    _, client = manager.new_user()
    assert client.post("/admin/kinds", json=kind_body(name)).status_code == 401
    assert client.put(f"/admin/kinds/{name}", json=kind_body(name)).status_code == 401
    assert client.delete(f"/admin/kinds/{name}").status_code == 401
    with manager.admin() as admin:
        bad = admin.post(
            "/admin/kinds",
            json=kind_body(
                name,
                config_schema={"type": "objekt", "properties": {"a": {"minimum": "one"}}},
                commands={"go": {"required": "text"}},
            ),
        )
        assert bad.status_code == 422 and detail(bad)["code"] == "invalid_schema", bad.text
        assert set(paths(bad)) == {
            "/config_schema/type",
            "/config_schema/properties/a/minimum",
            "/commands/go/required",
        }, paths(bad)
        for refused_name in ("demo", "Caps", "a:b", "under_"):
            refused = admin.post("/admin/kinds", json=kind_body(refused_name))
            assert refused.status_code == 422, (refused_name, refused.text)
        reserved = admin.post("/admin/kinds", json=kind_body(name, commands={"leave": {}}))
        assert reserved.status_code == 422
        assert admin.put("/admin/kinds/demo", json=kind_body("x")).status_code == 422, "no name"
        builtin = {k: v for k, v in kind_body("x").items() if k != "name"}
        assert admin.put("/admin/kinds/demo", json=builtin).status_code == 409
        assert admin.put(f"/admin/kinds/{name}", json=builtin).status_code == 404
        assert admin.delete(f"/admin/kinds/{name}").status_code == 404
        assert admin.get("/kinds").status_code == 200, "the admin token lists kinds too"


def test_builtin_kinds_check_what_they_read(manager: Manager) -> None:
    _, client = manager.new_user()
    demo = client.post("/bots", json={"bot": "demo", "config": {"crash_after_s": "soon"}})
    assert demo.status_code == 422 and paths(demo) == ["/config/crash_after_s"]
    telegram = client.post("/bots", json={"bot": "telegram", "config": {"scenario": {}}})
    assert telegram.status_code == 422 and detail(telegram)["code"] == "invalid_config"
    assert "/config/scenario/steps" in paths(telegram)
    no_token = {
        "bot": "telegram",
        "config": {"scenario": {"steps": {"a": {"message": {"en": "hi"}}}}},
    }
    refused = client.post("/bots", json=no_token)
    assert refused.status_code == 422 and detail(refused)["code"] == "missing_secret"
    unknown = client.post("/bots", json={"bot": "nope", "config": {}})
    assert unknown.status_code == 422 and detail(unknown)["code"] == "unknown_bot"


def test_an_exec_kind_runs_its_own_argv(manager: Manager) -> None:
    """The workload runs the kind's argv with the runtime's environment (here: `env` putting
    the demo bot's class in BOTFLEET_BOT, then the runtime)."""
    name = f"exec-{uuid.uuid4().hex[:8]}"
    argv = ["env", f"BOTFLEET_BOT={DEMO_CLASS}", "BOTFLEET_EXEC_MARK=1", sys.executable]
    body = {"name": name, "run": {"exec": [*argv, "-m", "botfleet.runtime"]}}
    with manager.admin() as admin:
        assert admin.post("/admin/kinds", json=body).status_code == 201
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": name, "config": {"anything": 1}})
    assert bot.status_code == 201, bot.text
    bot_id = bot.json()["id"]
    wait_for_status(client, bot_id, {"active"})
    echo = client.post(f"/bots/{bot_id}/commands", json={"action": "echo", "payload": {"a": 1}})
    assert echo.status_code == 202, "a kind listing no commands takes any"
    answered = wait_for_command(client, bot_id, echo.json()["id"], {"acked", "failed"})
    assert answered["result"] == {"a": 1}
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    assert wait_for_status(client, bot_id, {"completed", "failed"})["status"] == "completed"


def test_a_kind_whose_env_cannot_be_built_fails_its_bot(manager: Manager) -> None:
    name = f"broken-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "run": {"python": "nowhere.bot:Bot"},
        "package": {"wheels": ["/nonexistent/nowhere-1.0-py3-none-any.whl"]},
    }
    with manager.admin() as admin:
        assert admin.post("/admin/kinds", json=body).status_code == 201
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": name, "config": {}})
    assert bot.status_code == 201, bot.text
    failed = wait_for_status(client, bot.json()["id"], {"failed", "active"}, timeout=300)
    assert failed["status"] == "failed" and failed["status_reason"] == "kind_env_failed", failed


def test_kinds_are_listed_a_page_at_a_time_and_a_foreign_cursor_is_refused(
    manager: Manager,
) -> None:
    """Pages by name; a cursor that is not one the API returned is 422 `invalid_cursor` (the
    fuzzer found `?cursor=%08` answered with the first page: base64 skipped the byte)."""
    with manager.admin() as admin:
        for name in ("page-a", "page-b"):
            made = admin.post("/admin/kinds", json={"name": name, "run": {"exec": ["true"]}})
            assert made.status_code == 201, made.text
    _, client = manager.new_user()
    seen, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        answer = client.get("/kinds", params=params)
        assert answer.status_code == 200, answer.text
        seen += [k["name"] for k in answer.json()["items"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and {"page-a", "page-b", "demo"} <= set(seen), seen
    assert len(seen) == len(set(seen))
    for foreign in ("\x08", "bm90LWpzb24", "W10"):  # junk, base64 of not-JSON, of []
        refused = client.get("/kinds", params={"cursor": foreign})
        assert refused.status_code == 422, (foreign, refused.text)
        assert refused.json()["detail"]["code"] == "invalid_cursor"


def test_resources_and_placement_are_bounded_checked_and_kept(manager: Manager) -> None:
    """Over the admin's maxima: 422 `resources_over_limit` (a kind's too); a placement the
    process backend cannot honour: 422 `placement_unsupported`; neither stores anything.
    Within them: shown on the bot, and kept by a relaunch."""
    name = f"sized-{uuid.uuid4().hex[:8]}"
    _, client = manager.new_user()
    for extra, code, says in (
        ({"resources": {"cpu": 64}}, "resources_over_limit", "4 CPUs"),
        ({"resources": {"memory_mb": 65536}}, "resources_over_limit", "4096 MiB"),
        ({"placement": {"node_labels": {"zone": "a"}}}, "placement_unsupported", "process"),
        ({"placement": {"datacenters": ["dc1"]}}, "placement_unsupported", "process"),
    ):
        refused = client.post("/bots", json={"bot": "demo", "config": {}, **extra})
        assert refused.status_code == 422 and detail(refused)["code"] == code, refused.text
        assert says in detail(refused)["message"], refused.text
    assert client.get("/bots").json()["items"] == [], "nothing stored"
    with manager.admin() as admin:
        for extra, code in (
            ({"resources": {"memory_mb": 65536}}, "resources_over_limit"),
            ({"placement": {"constraints": ["node.role==worker"]}}, "placement_unsupported"),
        ):
            refused = admin.post("/admin/kinds", json=kind_body(name, **extra))
            assert refused.status_code == 422 and detail(refused)["code"] == code, refused.text
    assert client.get(f"/kinds/{name}").status_code == 404, "nothing stored"

    later = "2099-01-01T00:00:00Z"  # never launched: stopped at once, then relaunched
    body = {"resources": {"cpu": 0.5}, "placement": {}, "start_at": later}
    made = client.post("/bots", json={"bot": "demo", "config": {}, **body})
    assert made.status_code == 201, made.text
    assert (made.json()["resources"], made.json()["placement"]) == ({"cpu": 0.5}, {})
    assert client.post(f"/bots/{made.json()['id']}/stop").status_code == 202
    again = client.post(f"/bots/{made.json()['id']}/relaunch")
    assert again.status_code == 201, again.text
    shown = client.get(f"/bots/{again.json()['id']}").json()
    assert (shown["resources"], shown["placement"]) == ({"cpu": 0.5}, {})
    assert client.post(f"/bots/{shown['id']}/stop").status_code == 202
