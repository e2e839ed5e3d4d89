"""Every list is a page (issue 15, item 5): `{"items", "next_cursor"}`, `?limit` (default 100,
at most 1000) and `?cursor`, keyset-paginated; the runtime and the CLI follow pages; `/events`
streams are bounded per key.

Long histories are written straight into the manager's database (250 PATCHes through the API
would test the rate limits, not the pages); everything is read back through the public API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from botfleet.cli.api import ApiClient
from botfleet.manager.core.models import BotAttempt, BotTransition, Command, new_id, utcnow
from botfleet.manager.messaging.event_feed import BATCH, EventFeed
from botfleet.runtime.client import ManagerClient
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
    wait_until,
)

LATER = "2099-01-01T00:00:00Z"  # a bot that stays `requested`: nothing else writes to it


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    env = {**SPY_RUNTIME_ENV, "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true"}
    root = tmp_path_factory.mktemp("pages")
    with running_manager(root, redis_server.url, extra_env=env) as instance:
        yield instance


@pytest.fixture(scope="module")
def database(manager: Manager) -> Iterator[Any]:
    engine = create_engine(manager.database_url)
    yield engine
    engine.dispose()


def waiting_bot(client: httpx.Client) -> str:
    created = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def add_commands(database: Any, bot_id: str, count: int, *, status: str = "acked") -> list[str]:
    """`count` reconfigure commands, oldest first; their ids in that order."""
    now = utcnow()
    rows = [
        Command(
            id=new_id(),
            bot_id=bot_id,
            action="reconfigure",
            status=status,
            config={"n": n},
            config_version=n + 2,
            created_at=now,
            # Never re-published while the test reads them: housekeeping leaves them alone.
            next_publish_at=now + timedelta(hours=1),
            expires_at=now + timedelta(hours=1),
        )
        for n in range(count)
    ]
    ids = [r.id for r in rows]
    with Session(database) as session, session.begin():
        session.add_all(rows)
    return ids


def follow(client: httpx.Client, path: str, *, limit: int, **params: Any) -> list[list[Any]]:
    """Every page of a list, as the items of each page."""
    pages, cursor = [], None
    while True:
        answer = client.get(
            path, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "a cursor that never ends"


def assert_refused(answer: httpx.Response, code: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]["code"] == code, answer.text


# ---- the public lists -----------------------------------------------------------------------


def test_commands_come_in_pages_newest_first(manager: Manager, database: Any) -> None:
    _, client = manager.new_user()
    bot_id = waiting_bot(client)
    ids = add_commands(database, bot_id, 250)

    first = client.get(f"/bots/{bot_id}/commands").json()
    assert len(first["items"]) == 100 and first["next_cursor"], "the default page is 100"
    pages = follow(client, f"/bots/{bot_id}/commands", limit=100)
    assert [len(p) for p in pages] == [100, 100, 50]
    seen = [c["id"] for page in pages for c in page]
    assert seen == list(reversed(ids)), "all 250 once, newest first"
    assert len(set(seen)) == 250

    # A command added between two reads never shifts the next page (keyset, not OFFSET).
    page1 = client.get(f"/bots/{bot_id}/commands", params={"limit": 100}).json()
    newer = add_commands(database, bot_id, 1)
    page2 = client.get(
        f"/bots/{bot_id}/commands", params={"limit": 100, "cursor": page1["next_cursor"]}
    ).json()
    assert [c["id"] for c in page2["items"]] == seen[100:200]
    assert newer[0] not in {c["id"] for c in page1["items"] + page2["items"]}

    whole = client.get(f"/bots/{bot_id}/commands", params={"limit": 1000}).json()
    assert len(whole["items"]) == 251 and whole["next_cursor"] is None
    assert_refused(client.get(f"/bots/{bot_id}/commands", params={"limit": 1001}), "invalid_input")
    assert_refused(client.get(f"/bots/{bot_id}/commands", params={"limit": 0}), "invalid_input")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        base64.urlsafe_b64encode(b"[-1]").decode(),  # no key is negative
        base64.urlsafe_b64encode(b'["a","b"]').decode(),  # too many parts
        base64.urlsafe_b64encode(b'{"id": 1}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "x" * 201,
    ],
)
def test_a_cursor_this_api_did_not_make_is_refused(manager: Manager, cursor: str) -> None:
    _, client = manager.new_user()
    bot_id = waiting_bot(client)
    for path in (f"/bots/{bot_id}/commands", f"/bots/{bot_id}/transitions", "/bots"):
        answer = client.get(path, params={"cursor": cursor})
        assert answer.status_code == 422, (path, answer.text)
        code = answer.json()["detail"]["code"]
        assert code == ("invalid_input" if len(cursor) > 200 else "invalid_cursor"), answer.text


def test_transitions_and_attempts_come_in_pages_oldest_first(
    manager: Manager, database: Any
) -> None:
    _, client = manager.new_user()
    bot_id = waiting_bot(client)
    with Session(database) as session, session.begin():
        session.add_all(
            BotTransition(
                bot_id=bot_id,
                from_status="requested",
                to_status="requested",
                reason=f"step_{n}",
                source="api",
                detail=f"#{n}",
            )
            for n in range(150)
        )
        session.add_all(
            BotAttempt(bot_id=bot_id, attempt=n, launched_at=utcnow()) for n in range(1, 131)
        )

    pages = follow(client, f"/bots/{bot_id}/transitions", limit=60)
    assert [len(p) for p in pages] == [60, 60, 30]
    details = [t["detail"] for page in pages for t in page]
    assert details == [f"#{n}" for n in range(150)], "oldest first, each once"
    first = client.get(f"/bots/{bot_id}/transitions").json()
    assert len(first["items"]) == 100 and first["next_cursor"]

    attempts = follow(client, f"/bots/{bot_id}/attempts", limit=100)
    assert [a["attempt"] for page in attempts for a in page] == list(range(1, 131))
    assert_refused(
        client.get(f"/bots/{bot_id}/attempts", params={"cursor": "e30"}), "invalid_cursor"
    )
    assert_refused(
        client.get(f"/bots/{bot_id}/transitions", params={"limit": 1001}), "invalid_input"
    )

    # Another user's bot stays "not found", page or no page.
    _, stranger = manager.new_user()
    for path in ("transitions", "attempts", "commands"):
        assert stranger.get(f"/bots/{bot_id}/{path}").status_code == 404


def test_bots_and_users_lists_take_the_contract_limits(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=200)
    ids = [waiting_bot(client) for _ in range(3)]
    assert client.get("/bots", params={"limit": 1000}).status_code == 200
    assert_refused(client.get("/bots", params={"limit": 1001}), "invalid_input")
    pages = follow(client, "/bots", limit=2)
    assert [b["id"] for page in pages for b in page] == list(reversed(ids))

    with manager.admin() as admin:
        users = follow(admin, "/admin/users", limit=2)
        everyone = [u["id"] for page in users for u in page]
        assert len(everyone) == len(set(everyone)) >= 2
        assert_refused(admin.get("/admin/users", params={"cursor": "bad"}), "invalid_cursor")


class Receiver:
    """A webhook endpoint on loopback that answers 204."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_webhook_deliveries_come_in_pages_newest_first(manager: Manager) -> None:
    receiver = Receiver()
    try:
        _, client = manager.new_user()
        assert client.put("/webhook", json={"url": receiver.url}).status_code == 201
        for _ in range(5):  # each: requested → completed, one delivery
            bot_id = waiting_bot(client)
            assert client.post(f"/bots/{bot_id}/stop").status_code == 202
        wait_until(
            lambda: (
                len(client.get("/webhook/deliveries", params={"limit": 1000}).json()["items"]) == 5
            ),
            timeout=30,
            what="five deliveries",
        )
        pages = follow(client, "/webhook/deliveries", limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        events = [d["event_id"] for page in pages for d in page]
        assert events == sorted(events, reverse=True) and len(set(events)) == 5
        assert_refused(
            client.get("/webhook/deliveries", params={"cursor": "WyJ4Il0"}),  # ["x"]
            "invalid_cursor",
        )
        assert_refused(client.get("/webhook/deliveries", params={"limit": 1001}), "invalid_input")
    finally:
        receiver.server.shutdown()


# ---- the runtime's pending commands ---------------------------------------------------------


def test_the_runtime_reads_every_page_of_its_pending_commands(
    manager: Manager, database: Any
) -> None:
    """Against the real manager, with the bot's own token: 250 pending commands, 1000 a page
    at most, the client follows cursors; a `limit=100` read pages as the contract says."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    active = wait_for_status(client, bot["id"], {"active"})
    token = runtime_env(active["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    ids = add_commands(database, bot["id"], 250, status="pending")

    async def read() -> list[str]:
        runtime = ManagerClient(base_url=manager.callback_url, bot_id=bot["id"], token=token)
        try:
            return [c.id for c in await runtime.pending_commands()]
        finally:
            await runtime.aclose()

    assert asyncio.run(read()) == ids, "every pending command once, oldest first"
    bearer = {"Authorization": f"Bearer {token}"}
    as_bot = httpx.Client(base_url=manager.callback_url, headers=bearer)
    with as_bot:
        pages = follow(as_bot, f"/internal/bots/{bot['id']}/commands", limit=100, pending=1)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [c["id"] for page in pages for c in page] == ids
    client.post(f"/bots/{bot['id']}/stop")


class PagedManager:
    """A fake manager whose pending commands come 100 a page, with its own cursors."""

    def __init__(self, count: int) -> None:
        self.commands = [
            {"id": f"c{n:03}", "action": "leave", "issued_at": ""} for n in range(count)
        ]
        self.queries: list[dict[str, list[str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                fake.queries.append(query)
                start = int(query.get("cursor", ["0"])[0])
                end = start + 100
                page = {
                    "items": fake.commands[start:end],
                    "next_cursor": str(end) if end < len(fake.commands) else None,
                }
                data = json.dumps(page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_the_runtime_client_follows_cursors_to_the_last_page() -> None:
    fake = PagedManager(250)

    async def read() -> list[str]:
        runtime = ManagerClient(base_url=fake.url, bot_id="b1", token="t")
        try:
            return [c.id for c in await runtime.pending_commands()]
        finally:
            await runtime.aclose()

    try:
        got = asyncio.run(read())
    finally:
        fake.server.shutdown()
    assert got == [c["id"] for c in fake.commands], "all 250, in order, once"
    assert [q.get("cursor") for q in fake.queries] == [None, ["100"], ["200"]]
    assert all(q["pending"] == ["1"] for q in fake.queries)


# ---- /events streams per key ----------------------------------------------------------------


def open_stream(client: httpx.Client) -> tuple[Any, httpx.Response]:
    context = client.stream("GET", "/events", timeout=httpx.Timeout(10, read=30))
    return context, context.__enter__()


def test_a_key_holds_at_most_five_streams_and_others_are_unaffected(manager: Manager) -> None:
    _, client = manager.new_user()
    _, other = manager.new_user()
    opened = [open_stream(client) for _ in range(5)]
    try:
        assert all(r.status_code == 200 for _, r in opened)
        sixth, refused = open_stream(client)
        try:
            assert refused.status_code == 429, refused.status_code
            assert json.loads(refused.read())["detail"]["code"] == "too_many_streams"
        finally:
            sixth.__exit__(None, None, None)
        theirs = open_stream(other)
        try:
            assert theirs[1].status_code == 200, "another key's streams are its own"
        finally:
            theirs[0].__exit__(None, None, None)
        # Closing one frees its place once the manager sees the client gone.
        context, _ = opened.pop()
        context.__exit__(None, None, None)

        def reopened() -> Any:
            context, answer = open_stream(client)
            if answer.status_code == 200:
                return context, answer
            answer.read()
            context.__exit__(None, None, None)
            return None

        opened.append(wait_until(reopened, timeout=15, what="a freed stream place"))
    finally:
        for context, _ in opened:
            context.__exit__(None, None, None)


def test_an_outbox_walk_reads_bounded_batches(manager: Manager) -> None:
    """`since=0` on a manager with history: the stream answers the caller's own events and
    reads the outbox a batch at a time (the batch size is the read's bound)."""
    _, client = manager.new_user()
    bot_id = waiting_bot(client)
    client.post(f"/bots/{bot_id}/stop")
    engine = create_engine(manager.database_url)
    try:
        feed = EventFeed(sessionmaker(engine), user_id=None)
        rows = feed.read(0)
        assert 0 < len(rows) <= BATCH
        mine = EventFeed(sessionmaker(engine), user_id="nobody")
        assert all(kind == "" and data == {} for _, kind, data in mine.read(0)), (
            "another user's events are never sent"
        )
    finally:
        engine.dispose()


def test_cli_lists_follow_pages(manager: Manager, database: Any) -> None:
    user, client = manager.new_user()
    bot_id = waiting_bot(client)
    ids = add_commands(database, bot_id, 1005)
    with ApiClient(manager.url, user["api_key"]) as api:
        assert [c["id"] for c in api.commands(bot_id)] == list(reversed(ids))
        client.post(f"/bots/{bot_id}/stop")
        assert [t["to"] for t in api.transitions(bot_id)] == ["completed"]
