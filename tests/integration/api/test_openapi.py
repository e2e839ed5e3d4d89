"""The OpenAPI documents as clients and `/docs` use them: a bearer scheme on every route that
needs a token (the Authorize button of Swagger UI works), operation ids a generated client can
name its methods after, the lifecycle's statuses as enums, and the bots' callbacks in their own
document on their own port."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema

from botfleet.manager.lifecycle import BotStatus
from tests.support import ADMIN_TOKEN, Manager, wait_for_status
from tests.ui_browser import click, console_errors, wait_for, wait_text

API_SCHEME = "bearerAuth"
BOT_SCHEME = "botToken"
#: The routes anyone may call: the probes (`/metrics` is not in the document).
PUBLIC_PATHS = {"/healthz", "/readyz"}
CALLBACK_PATHS = {
    "/internal/bots/{bot_id}/callbacks",
    "/internal/bots/{bot_id}/commands",
    "/internal/bots/{bot_id}/commands/{command_id}/ack",
    "/internal/bots/{bot_id}/secrets",
}
#: A body each callback route accepts, so that what answers is the token check.
CALLBACK_BODIES = {"callbacks": {"event": "heartbeat"}, "ack": {"ok": True}}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
MISSING_TOKEN = {
    "detail": {"code": "missing_token", "message": "send Authorization: Bearer <api key>"}
}


def document(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def api_document(manager: Manager) -> dict[str, Any]:
    return document(f"{manager.url}/openapi.json")


def callbacks_document(manager: Manager) -> dict[str, Any]:
    return document(f"{manager.callback_url}/internal/openapi.json")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def filled(path: str) -> str:
    """The path with every parameter given a value (`x`)."""
    return re.sub(r"\{[^}]+\}", "x", path)


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema behind `$ref`s, and the non-null branch of a nullable one."""
    while True:
        if "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            schema = doc["components"]["schemas"][name]
        elif "anyOf" in schema:
            (schema,) = [s for s in schema["anyOf"] if s.get("type") != "null"]
        else:
            return schema


def field_enum(doc: dict[str, Any], model: str, field: str) -> list[str] | None:
    model_schema = doc["components"]["schemas"][model]
    enum = resolve(doc, model_schema["properties"][field]).get("enum")
    return list(enum) if enum is not None else None


def authorization(doc: dict[str, Any], scheme_name: str, token: str) -> dict[str, str]:
    """The header a client builds from the scheme the document declares."""
    scheme = doc["components"]["securitySchemes"][scheme_name]
    assert scheme["type"] == "http", scheme
    return {"Authorization": f"{scheme['scheme'].capitalize()} {token}"}


def assert_documented(
    doc: dict[str, Any], method: str, path: str, response: httpx.Response
) -> None:
    """The answer's status is listed for the operation and its body matches the listed schema."""
    listed = doc["paths"][path][method]["responses"]
    code = str(response.status_code)
    assert code in listed, (method, path, code, sorted(listed))
    schema = listed[code]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": doc["components"]})


def test_every_operation_but_the_probes_declares_the_bearer_scheme(manager: Manager) -> None:
    doc = api_document(manager)
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {API_SCHEME}, schemes
    assert schemes[API_SCHEME]["type"] == "http" and schemes[API_SCHEME]["scheme"] == "bearer"
    assert "API key" in schemes[API_SCHEME]["description"]
    public_seen = set()
    for method, path, operation in operations(doc):
        # What the document says...
        if path in PUBLIC_PATHS:
            public_seen.add(path)
            assert "security" not in operation, (method, path)
        else:
            assert operation.get("security") == [{API_SCHEME: []}], (method, path)
        # ...is what the server does: without the token, the documented 401.
        answer = httpx.request(method.upper(), manager.url + filled(path), timeout=10)
        if path in PUBLIC_PATHS:
            assert answer.status_code != 401, (method, path, answer.text)
        else:
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json() == MISSING_TOKEN, (method, path)
            assert_documented(doc, method, path, answer)
    assert public_seen == PUBLIC_PATHS


def test_the_declared_scheme_authenticates_and_its_absence_is_the_documented_401(
    manager: Manager,
) -> None:
    doc = api_document(manager)
    user, _ = manager.new_user()
    with_key = authorization(doc, API_SCHEME, user["api_key"])
    assert with_key == {"Authorization": f"Bearer {user['api_key']}"}
    listed = httpx.get(f"{manager.url}/bots", headers=with_key, timeout=10)
    assert listed.status_code == 200 and listed.json()["items"] == [], listed.text
    as_admin = authorization(doc, API_SCHEME, ADMIN_TOKEN)
    assert httpx.get(f"{manager.url}/admin/users", headers=as_admin, timeout=10).status_code == 200

    # The scheme's word is case-insensitive, as before; another scheme is no token at all (our
    # 401, not the 403 FastAPI's own HTTPBearer would answer).
    lower = {"Authorization": f"bearer {user['api_key']}"}
    assert httpx.get(f"{manager.url}/bots", headers=lower, timeout=10).status_code == 200
    for headers in ({}, {"Authorization": f"Basic {user['api_key']}"}, {"Authorization": "Bearer"}):
        refused = httpx.get(f"{manager.url}/bots", headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.json() == MISSING_TOKEN, (headers, refused)
        assert_documented(doc, "get", "/bots", refused)
    wrong = authorization(doc, API_SCHEME, "bf_not-a-key")
    unknown = httpx.get(f"{manager.url}/bots", headers=wrong, timeout=10)
    assert unknown.status_code == 401 and unknown.json()["detail"]["code"] == "invalid_token"
    assert_documented(doc, "get", "/bots", unknown)


def test_operation_ids_are_unique_and_free_of_path_and_method(manager: Manager) -> None:
    found = [
        (operation["operationId"], method, path)
        for doc in (api_document(manager), callbacks_document(manager))
        for method, path, operation in operations(doc)
    ]
    ids = [op_id for op_id, _, _ in found]
    assert len(ids) > 40 and len(ids) == len(set(ids)), sorted(ids)
    for op_id, method, path in found:
        # FastAPI's default is the name, the path and the method: `stop_bot_bots__bot_id__stop_post`
        # (a parameter leaves a double underscore).
        assert re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", op_id), op_id
        assert not op_id.endswith(f"_{method}"), (op_id, method, path)
    by_route = {(method, path): op_id for op_id, method, path in found}
    assert by_route["post", "/bots"] == "start_bot"
    assert by_route["get", "/bots"] == "list_bots"
    assert by_route["post", "/bots/{bot_id}/stop"] == "stop_bot"
    assert by_route["post", "/internal/bots/{bot_id}/callbacks"] == "callback"


def test_statuses_are_enums_of_the_lifecycle_and_plain_strings_on_the_wire(
    manager: Manager,
) -> None:
    doc = api_document(manager)
    lifecycle = [status.value for status in BotStatus]
    assert field_enum(doc, "BotPublic", "status") == lifecycle
    assert field_enum(doc, "TransitionPublic", "from") == lifecycle
    assert field_enum(doc, "TransitionPublic", "to") == lifecycle
    assert field_enum(doc, "CommandPublic", "status") == [
        "pending",
        "delivered",
        "acked",
        "failed",
        "expired",
    ]
    assert field_enum(doc, "WebhookDeliveryPublic", "status") == ["pending", "delivered", "failed"]
    assert field_enum(callbacks_document(manager), "CallbackOut", "status") == lifecycle

    _, client = manager.new_user()
    with client:
        bot = client.post("/bots", json={"bot": "demo", "config": {}})
        assert bot.status_code == 201, bot.text
        bot_id = bot.json()["id"]
        assert bot.json()["status"] in lifecycle
        wait_for_status(client, bot_id, {"active"})
        raw = client.get(f"/bots/{bot_id}")
        assert '"status":"active"' in raw.text, raw.text
        moves = client.get(f"/bots/{bot_id}/transitions").json()["items"]
        assert moves and all(m["from"] in lifecycle and m["to"] in lifecycle for m in moves)
        assert moves[-1]["to"] == "active", moves
        assert client.post(f"/bots/{bot_id}/stop").status_code == 202


def test_the_callbacks_have_their_own_document_on_their_own_port(manager: Manager) -> None:
    api = api_document(manager)
    assert not [path for path in api["paths"] if path.startswith("/internal/")]
    assert httpx.get(f"{manager.url}/internal/openapi.json", timeout=10).status_code == 404
    assert httpx.get(f"{manager.callback_url}/openapi.json", timeout=10).status_code == 404

    callbacks = callbacks_document(manager)
    assert set(callbacks["components"]["securitySchemes"]) == {BOT_SCHEME}
    seen = set()
    for method, path, operation in operations(callbacks):
        seen.add(path)
        assert operation["security"] == [{BOT_SCHEME: []}], (method, path)
        body = CALLBACK_BODIES.get(path.rsplit("/", 1)[-1])
        url = filled(path)
        on_api_port = httpx.request(method.upper(), manager.url + url, json=body, timeout=10)
        assert on_api_port.status_code == 404, (method, path, on_api_port.text)
        without_token = httpx.request(
            method.upper(), manager.callback_url + url, json=body, timeout=10
        )
        assert without_token.status_code == 401, (method, path, without_token.text)
        assert without_token.json() == MISSING_TOKEN
        assert_documented(callbacks, method, path, without_token)
    assert seen == CALLBACK_PATHS


def test_the_authorize_button_of_the_docs_page_works(manager: Manager, browser: Any) -> None:
    """In Swagger UI, as a person: Try it out answers 401, then Authorize with the key, and the
    same call answers 200 with the key sent as a bearer token."""
    from selenium.webdriver.common.by import By

    user, _ = manager.new_user()
    browser.get(f"{manager.url}/docs")
    list_bots = "#operations-bots-list_bots"  # Swagger UI's id: the tag and the operation id
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, list_bots), what="GET /bots")
    locks = browser.find_elements(By.CSS_SELECTOR, f"{list_bots} .authorization__btn")
    assert locks, "GET /bots shows no lock: it declares no security"
    assert not browser.find_elements(
        By.CSS_SELECTOR, "#operations-health-healthz .authorization__btn"
    )

    click(browser, f"{list_bots} .opblock-summary")
    click(browser, f"{list_bots} .try-out__btn")
    click(browser, f"{list_bots} .execute")
    status = f"{list_bots} .live-responses-table .response .response-col_status"
    wait_text(browser, status, "401")
    console_errors(browser)  # the browser logs the 401 it was asked to show: expected here

    click(browser, ".auth-wrapper .authorize")
    field = wait_for(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, "input[aria-label='auth-bearer-value']"),
        what="the bearer token field",
    )
    field.send_keys(user["api_key"])
    click(browser, ".auth-btn-wrapper .modal-btn.authorize")
    click(browser, ".auth-btn-wrapper .btn-done")
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".auth-wrapper .locked"))

    click(browser, f"{list_bots} .execute")
    wait_text(browser, status, "200")
    curl = wait_text(browser, f"{list_bots} .curl-command", "Authorization")
    assert f"Authorization: Bearer {user['api_key']}" in curl, curl
