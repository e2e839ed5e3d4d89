"""Refusals a person can act on: where the JSON breaks, which media type to send, what is missing,
and why a bot can no longer change."""

from __future__ import annotations

import httpx
import pytest

from tests.support import Manager, wait_for_status

LATER = "2099-01-01T00:00:00Z"  # a scheduled start keeps a bot `requested`, with no process
JSON = {"Content-Type": "application/json"}


def test_malformed_json_says_where_and_why(manager: Manager) -> None:
    _, client = manager.new_user()
    broken = client.post("/bots", content=b'{"bot": "demo" "config": {}}', headers=JSON)
    assert broken.status_code == 422, broken.text
    detail = broken.json()["detail"]
    assert detail["code"] == "invalid_json"
    assert detail["message"] == "invalid JSON at line 1, column 16: Expecting ',' delimiter"
    assert (detail["line"], detail["column"]) == (1, 16)

    lines = b'{\n  "bot": "demo",\n  "config": {,}\n}'
    multiline = client.post("/bots", content=lines, headers=JSON).json()["detail"]
    assert multiline["code"] == "invalid_json"
    assert multiline["message"].startswith("invalid JSON at line 3, column 14: "), multiline

    patch = client.patch("/bots/whatever/config", content=b'{"config": ', headers=JSON)
    assert patch.status_code == 422 and patch.json()["detail"]["code"] == "invalid_json"
    assert client.get("/bots").json()["items"] == [], "nothing was created"


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", None],
    ids=["curl -d", "text", "none"],
)
def test_a_json_body_sent_as_another_media_type_is_named(
    manager: Manager, content_type: str | None
) -> None:
    _, client = manager.new_user()
    body = b'{"bot": "demo", "config": {}, "start_at": "2099-01-01T00:00:00Z"}'
    headers = {"Content-Type": content_type} if content_type else {}
    request = client.build_request("POST", "/bots", content=body, headers=headers)
    assert request.headers.get("content-type") == content_type
    response = client.send(request)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "unsupported_media_type"
    assert "send the body as JSON with Content-Type: application/json" in detail["message"]
    assert (content_type or "without a Content-Type") in detail["message"]
    assert client.get("/bots").json()["items"] == [], "nothing was created"
    # The same body as JSON is fine.
    accepted = client.post("/bots", content=body, headers=JSON)
    assert accepted.status_code == 201, accepted.text
    client.post(f"/bots/{accepted.json()['id']}/stop")


def test_a_missing_body_or_config_is_named(manager: Manager) -> None:
    _, client = manager.new_user()
    empty = client.post("/bots", headers=JSON)
    assert empty.status_code == 422
    assert empty.json()["detail"]["code"] == "invalid_input"
    assert "Content-Type: application/json" in empty.json()["detail"]["message"]

    no_config = client.post("/bots", json={"bot": "demo", "start_at": LATER})
    assert no_config.status_code == 422, no_config.text
    detail = no_config.json()["detail"]
    assert detail["code"] == "invalid_input" and detail["message"] == "config: Field required"
    assert client.get("/bots").json()["items"] == [], "nothing was created"


def test_reconfiguring_a_bot_that_ended_says_so(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(client, bot["id"], {"active"})
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed"})
    response = client.patch(f"/bots/{bot['id']}/config", json={"config": {"lang": "fr"}})
    assert response.status_code == 409
    assert response.json()["detail"] == {
        "code": "illegal_transition",
        "message": f"bot {bot['id']} has ended (completed); it can no longer be reconfigured",
        "status": "completed",
        "requested": "reconfigure",
    }


def test_openapi_documents_the_config_routes_and_415(manager: Manager) -> None:
    spec = httpx.get(f"{manager.url}/openapi.json").json()
    config = spec["paths"]["/bots/{bot_id}/config"]
    assert set(config) == {"patch", "put"}
    assert config["patch"]["summary"] == "Merge into a bot's config"
    assert "JSON Merge Patch (RFC 7396)" in config["patch"]["description"]
    assert config["put"]["summary"] == "Replace a bot's config"
    for method in ("patch", "put"):
        assert {"202", "409", "415", "422"} <= set(config[method]["responses"])
    assert "415" in spec["paths"]["/bots"]["post"]["responses"]
    assert "config" in spec["components"]["schemas"]["BotCreate"]["required"]
