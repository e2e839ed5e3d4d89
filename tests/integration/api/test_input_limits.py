"""Hostile JSON is refused before anything parses it (issue 27, item 6): nested 500 or 100,000
deep (json's recursion answered 500 with 116 KB of traceback in the log per 1 KB request), NaN
and Infinity (Python's json takes them), and 1,000 label filters on a listing (each a subquery:
the listing held a database connection until the pool timed out, 503). Each answers 422 with a
stable code, at once, and the manager logs no traceback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from botfleet.manager.services.bots import MAX_LABEL_FILTERS
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
)

#: The default BOTFLEET_MAX_JSON_DEPTH.
MAX_DEPTH = 32
#: However deep the body, the answer comes at once (the scan has no recursion and few passes).
FAST_S = 5.0


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """A manager whose process bots keep a copy of their token: the tests send bots' callbacks."""
    root = tmp_path_factory.mktemp("input-limits")
    with running_manager(root, redis_server.url, extra_env=SPY_RUNTIME_ENV) as instance:
        yield instance


@pytest.fixture
def log_since(manager: Manager) -> Iterator[None]:
    """What the manager logs during the test holds no traceback."""
    start = manager.log_path.stat().st_size
    yield
    with manager.log_path.open("rb") as log:
        log.seek(start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-4000:]


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def post_raw(client: httpx.Client, path: str, body: str, **headers: str) -> httpx.Response:
    started = time.monotonic()
    response = client.post(
        path, content=body.encode(), headers={"Content-Type": "application/json", **headers}
    )
    assert time.monotonic() - started < FAST_S, f"{path} took {time.monotonic() - started:.1f} s"
    return response


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 422, response.text[:500]
    assert response.json()["detail"]["code"] == code, response.text[:500]


@pytest.fixture(scope="module")
def live_bot(manager: Manager) -> tuple[dict[str, Any], httpx.Client, str]:
    """A running bot of its own user, and its token (the spy runtime's copy)."""
    _, client = manager.new_user()
    response = client.post("/bots", json={"bot": "demo", "config": {}})
    assert response.status_code == 201, response.text
    bot = wait_for_status(client, response.json()["id"], {"active"})
    return bot, client, runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]


@pytest.mark.usefixtures("log_since")
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 100_000])
def test_a_deep_body_is_refused_on_the_api(manager: Manager, depth: int) -> None:
    _, client = manager.new_user()
    body = '{"bot": "demo", "config": {"a": ' + nested(depth) + "}}"
    assert_refused(post_raw(client, "/bots", body), "json_too_deep")
    # Unauthenticated makes no difference: the body is never parsed.
    anonymous = httpx.Client(base_url=manager.url, timeout=30)
    assert_refused(post_raw(anonymous, "/admin/users", nested(depth)), "json_too_deep")
    assert client.get("/bots").json()["items"] == []


@pytest.mark.usefixtures("log_since")
@pytest.mark.parametrize("depth", [500, 100_000])
def test_a_deep_body_is_refused_on_a_bots_callback(
    manager: Manager, live_bot: tuple[dict[str, Any], httpx.Client, str], depth: int
) -> None:
    bot, client, token = live_bot
    callbacks = httpx.Client(
        base_url=manager.callback_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    path = f"/internal/bots/{bot['id']}/callbacks"
    report = '{"event": "report", "data": {"x": ' + nested(depth) + "}}"
    assert_refused(post_raw(callbacks, path, report), "json_too_deep")
    ack = f"/internal/bots/{bot['id']}/commands/unknown/ack"
    assert_refused(post_raw(callbacks, ack, nested(depth, "{}")), "json_too_deep")
    # The bot is unharmed, and its well-formed callbacks still work.
    assert callbacks.post(path, json={"event": "heartbeat"}).status_code == 200
    assert client.get(f"/bots/{bot['id']}").json()["status"] == "active"


@pytest.mark.usefixtures("log_since")
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-2.5E+400"])
def test_non_finite_numbers_are_refused(
    manager: Manager, live_bot: tuple[dict[str, Any], httpx.Client, str], number: str
) -> None:
    bot, client, token = live_bot
    config = '{"bot": "demo", "config": {"limit": ' + number + "}}"
    assert_refused(post_raw(client, "/bots", config), "non_finite_number")
    patch = '{"config": {"limit": ' + number + "}}"
    path = f"/bots/{bot['id']}/config"
    assert_refused(
        client.patch(path, content=patch, headers={"Content-Type": "application/json"}),
        "non_finite_number",
    )
    command = '{"action": "echo", "payload": {"n": [' + number + "]}}"
    assert_refused(post_raw(client, f"/bots/{bot['id']}/commands", command), "non_finite_number")
    report = '{"event": "report", "data": {"n": ' + number + "}}"
    callback = f"{manager.callback_url}/internal/bots/{bot['id']}/callbacks"
    refused = post_raw(client, callback, report, Authorization=f"Bearer {token}")
    assert_refused(refused, "non_finite_number")
    # The same words inside strings are data, and a large finite float is a float.
    fine = '{"config": {"limit": "' + number + '", "big": 1e300}}'
    answer = client.patch(path, content=fine, headers={"Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text


@pytest.mark.usefixtures("log_since")
@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff", "x\\ud83dy"])
def test_text_no_database_stores_is_refused(
    manager: Manager, live_bot: tuple[dict[str, Any], httpx.Client, str], escape: str
) -> None:
    """PostgreSQL stores neither NUL nor half a surrogate pair (a 500 from the fuzzer on
    POST /admin/kinds): every JSON body holding one gets 422 `unstorable_text`, on any database."""
    bot, client, token = live_bot
    assert_refused(
        post_raw(client, "/bots", '{"bot": "demo", "config": {"a": "' + escape + '"}}'),
        "unstorable_text",
    )
    assert_refused(
        post_raw(client, "/bots", '{"bot": "demo", "labels": {"' + escape + '": "v"}}'),
        "unstorable_text",
    )
    admin = manager.admin()
    kind = '{"name": "k", "run": {"exec": ["x' + escape + '"]}}'
    assert_refused(post_raw(admin, "/admin/kinds", kind), "unstorable_text")
    report = '{"event": "report", "data": {"s": "' + escape + '"}}'
    callback = f"{manager.callback_url}/internal/bots/{bot['id']}/callbacks"
    refused = post_raw(client, callback, report, Authorization=f"Bearer {token}")
    assert_refused(refused, "unstorable_text")
    # An escaped backslash before the letters is text; a whole surrogate pair is one character.
    # The same holds for a NUL in a URL (its path or its query) and in a dashboard form.
    for url in ["/bots?label=a:%00", "/bots/%00", "/webhook/deliveries?bot_id=%00"]:
        assert_refused(client.get(url), "unstorable_text")
    assert_refused(admin.get("/admin/audit", params={"user_id": "\0"}), "unstorable_text")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_refused(
        client.post("/ui/bots/new", content=b"bot=demo%00", headers=form), "unstorable_text"
    )
    fine = '{"bot": "demo", "config": {"a": "\\\\u0000", "b": "\\ud83d\\ude00"}}'
    created = post_raw(client, "/bots", fine)
    assert created.status_code == 201, created.text
    stored = client.get(f"/bots/{created.json()['id']}").json()["config"]
    assert stored == {"a": "\\u0000", "b": "\U0001f600"}


@pytest.mark.usefixtures("log_since")
def test_label_filters_are_capped(manager: Manager) -> None:
    _, client = manager.new_user()
    many = [("label", f"k{n}:v") for n in range(1_000)]
    started = time.monotonic()
    refused = client.get("/bots", params=many)
    assert time.monotonic() - started < FAST_S
    assert_refused(refused, "too_many_label_filters")
    allowed = client.get("/bots", params=many[:MAX_LABEL_FILTERS])
    assert allowed.status_code == 200, allowed.text
    assert_refused(
        client.get("/bots", params=many[: MAX_LABEL_FILTERS + 1]), "too_many_label_filters"
    )


@pytest.mark.usefixtures("log_since")
def test_ordinary_bodies_still_work(manager: Manager) -> None:
    _, client = manager.new_user()
    # Brackets inside strings are not nesting; escaped quotes do not end a string.
    config = {"s": nested(100) + '\\"[{', "list": [[[1.5, -2e10, None, True, {"k": []}]]]}
    response = client.post("/bots", json={"bot": "demo", "config": config, "labels": {"a": "b"}})
    assert response.status_code == 201, response.text
    assert response.json()["config"] == config
    listed = client.get("/bots", params=[("label", "a:b")]).json()["items"]
    assert [b["id"] for b in listed] == [response.json()["id"]]
