"""A saturated database (issue 15 item 2): users flooding the API get 503 `database_busy` with
Retry-After, never a 500 and never an endless queue, while bots' callbacks keep answering."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from botfleet.manager.core.db import make_engine
from botfleet.manager.core.errors import install_error_handlers
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    database_kind,
    fresh_database_url,
    running_manager,
    runtime_env,
    wait_for_status,
)

TINY_POOL = {
    "BOTFLEET_DB_POOL_SIZE": "4",
    "BOTFLEET_DB_RESERVED_FOR_BOTS": "1",  # users share 3 places
    "BOTFLEET_DB_POOL_OVERFLOW": "4",
    "BOTFLEET_ADMISSION_WAIT_S": "1",
}
FLOOD_S = 4.0


@pytest.fixture
def tiny_pool_manager(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    env = {**SPY_RUNTIME_ENV, **TINY_POOL}
    with running_manager(tmp_path, redis_server.url, extra_env=env) as manager:
        yield manager


@pytest.mark.skipif(database_kind() == "sqlite", reason="row locks from outside: PostgreSQL")
def test_flooding_users_get_503_while_heartbeats_land(tiny_pool_manager: Manager) -> None:
    manager = tiny_pool_manager
    user, client = manager.new_user(max_bots=1000)
    beating = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    ref = wait_for_status(client, beating["id"], {"active"})["runtime_ref"]
    bot_auth = {"Authorization": f"Bearer {runtime_env(ref)['BOTFLEET_BOT_TOKEN']}"}
    callback = f"{manager.callback_url}/internal/bots/{beating['id']}/callbacks"

    answers: list[httpx.Response] = []
    done = threading.Event()

    def flood() -> None:
        """Starts while the user's row is locked (the concurrency check waits on it): each
        holds a place until released."""
        later = {"bot": "demo", "config": {}, "start_at": "2099-01-01T00:00:00Z"}
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=30) as own:
            while not done.is_set():
                answers.append(own.post("/bots", json=later))

    dsn = manager.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as lock:
        lock.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user["id"],))
        flooders = [threading.Thread(target=flood) for _ in range(8)]
        for thread in flooders:
            thread.start()
        heartbeats: list[tuple[int, float]] = []
        deadline = time.monotonic() + FLOOD_S
        while time.monotonic() < deadline:
            began = time.monotonic()
            status = httpx.post(callback, json={"event": "heartbeat"}, headers=bot_auth).status_code
            heartbeats.append((status, time.monotonic() - began))
            time.sleep(0.1)
        reader = client.get("/bots")  # a user's read waits for a users' place, in vain
        lock.rollback()  # the slow requests finish
        done.set()
        for thread in flooders:
            thread.join(30)

    assert {status for status, _ in heartbeats} == {200}, heartbeats
    assert max(took for _, took in heartbeats) < 1.0, heartbeats
    codes = Counter(r.status_code for r in answers)
    assert 500 not in codes, codes
    busy = [r for r in answers if r.status_code == 503]
    assert busy, codes
    assert {r.json()["detail"]["code"] for r in busy} == {"database_busy"}
    assert all(int(r.headers["Retry-After"]) >= 1 for r in busy)
    assert codes[201] >= 3, codes  # the requests that held the places finished once released
    assert reader.status_code == 503 and reader.json()["detail"]["code"] == "database_busy"
    assert client.get("/bots").status_code == 200  # and the API is back at once


def test_pool_timeout_is_503_database_busy(tmp_path: Path) -> None:
    """SQLAlchemy's pool timeout (every connection taken for BOTFLEET_DB_POOL_TIMEOUT_S) is
    rendered as 503 `database_busy` with Retry-After; it used to be a bare 500."""
    url = fresh_database_url(tmp_path)
    engine = make_engine(url, pool_size=2, max_overflow=0, pool_timeout=0.2)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/query")
    def query() -> dict[str, int]:
        with engine.connect() as conn:
            return {"n": int(conn.exec_driver_sql("SELECT 1").scalar_one())}

    held = [engine.connect() for _ in range(2)]  # the whole pool
    try:
        with TestClient(app, raise_server_exceptions=False) as http:
            busy = http.get("/query")
            assert busy.status_code == 503, busy.text
            assert busy.json()["detail"]["code"] == "database_busy"
            assert int(busy.headers["Retry-After"]) >= 1
            held.pop().close()
            assert http.get("/query").json() == {"n": 1}
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
