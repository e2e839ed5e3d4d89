"""The heartbeat path (issue 16): heartbeats are coalesced and written in batches, bot tokens are
authenticated from a per-process cache, and neither may ever let a dead token or a lost
heartbeat through: a bot that ends is refused on every replica at once, a heartbeat reaches the
database within the coalescing interval, an outage loses none, and a heartbeat can only land on
the live attempt whose token sent it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.secrets import digest
from botfleet.manager.hot_path.credentials import CredentialCache, KnownBot
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.services.users import create_user
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    second_replica,
    wait_for_status,
    wait_until,
)

DEMO = {"bot": "demo", "config": {}}


@pytest.fixture
def two_replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Manager, Manager]]:
    """Two managers on one database and one Redis; their bots keep a copy of their token."""
    with (
        running_manager(tmp_path, redis_server.url, extra_env=SPY_RUNTIME_ENV) as first,
        second_replica(first, extra_env=SPY_RUNTIME_ENV) as second,
    ):
        yield first, second


def _heartbeat(manager: Manager, bot_id: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{manager.callback_url}/internal/bots/{bot_id}/callbacks",
        json={"event": "heartbeat"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _written(manager: Manager) -> float:
    """The manager's count of heartbeats written to the database."""
    for line in httpx.get(f"{manager.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("botfleet_heartbeats_written_total "):
            return float(line.split()[1])
    return 0.0


def _last_heartbeat(database_url: str, bot_id: str) -> object:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(Bot.last_heartbeat_at).where(Bot.id == bot_id))
    finally:
        engine.dispose()


def test_a_bot_that_ends_is_refused_by_every_replica_at_once(
    two_replicas: tuple[Manager, Manager],
) -> None:
    first, second = two_replicas
    _, client = first.new_user()
    bot = client.post("/bots", json=DEMO).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    token = runtime_env(ref)["BOTFLEET_BOT_TOKEN"]
    # Both replicas have authenticated the token (and keep it in memory).
    for replica in (first, second, first, second):
        assert _heartbeat(replica, bot["id"], token).status_code == 200
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed"})
    # Without the invalidation, the second replica would answer 200 for the cache TTL (minutes).
    ended = time.monotonic()
    wait_until(
        lambda: _heartbeat(second, bot["id"], token).status_code == 401,
        timeout=1.0,
        interval=0.05,
        what="the second replica refusing the ended bot's token",
    )
    assert _heartbeat(first, bot["id"], token).status_code == 401
    assert time.monotonic() - ended < 1.0


def test_heartbeats_are_written_in_batches_within_the_interval(
    two_replicas: tuple[Manager, Manager],
) -> None:
    first, _ = two_replicas
    _, client = first.new_user()
    bot = client.post("/bots", json=DEMO).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    token = runtime_env(ref)["BOTFLEET_BOT_TOKEN"]
    before = _last_heartbeat(first.database_url, bot["id"])
    written_before = _written(first)
    began = time.monotonic()
    for _ in range(40):
        assert _heartbeat(first, bot["id"], token).status_code == 200
    sent_in = time.monotonic() - began
    # FAST_SETTINGS: a 1 s heartbeat, so batches go every 0.5 s; the bot's own heartbeats
    # (one a second) join them. 40 heartbeats sent in `sent_in` seconds are a handful of writes.
    wait_until(
        lambda: _last_heartbeat(first.database_url, bot["id"]) != before,
        timeout=2.0,
        what="the coalesced heartbeat in the database",
    )
    writes = _written(first) - written_before
    assert writes <= 2 * (sent_in / 0.5 + 2), f"{writes} writes for 40 heartbeats in {sent_in} s"
    assert writes < 40


def test_a_heartbeat_lands_only_on_the_live_attempt_that_sent_it(
    sessions: sessionmaker[Session],
) -> None:
    old = utcnow() - timedelta(minutes=5)
    with sessions() as session, session.begin():
        user, _ = create_user(session, name="hb", max_concurrent_bots=5)
        live = _bot(user.id, status="active", token_hash=digest("current"), last_heartbeat_at=old)
        ended = _bot(user.id, status="completed", token_hash=None, last_heartbeat_at=old)
        session.add_all([live, ended])
        session.flush()
        live_id, ended_id = live.id, ended.id
    buffer = HeartbeatBuffer(max_entries=10)
    buffer.record(live_id, digest("previous attempt"))  # a stale token of the same bot
    buffer.record(ended_id, digest("whatever"))
    buffer.flush(sessions)
    with sessions() as session:
        assert _naive(session.get(Bot, live_id).last_heartbeat_at) == _naive(old)
        assert _naive(session.get(Bot, ended_id).last_heartbeat_at) == _naive(old)
    buffer.record(live_id, digest("current"))
    buffer.flush(sessions)
    with sessions() as session:
        assert _naive(session.get(Bot, live_id).last_heartbeat_at) > _naive(old)


def test_an_outage_loses_no_heartbeat(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    with sessions() as session, session.begin():
        user, _ = create_user(session, name="hb-outage", max_concurrent_bots=5)
        bot = _bot(user.id, status="active", token_hash=digest("t"), last_heartbeat_at=None)
        session.add(bot)
        session.flush()
        bot_id = bot.id
    buffer = HeartbeatBuffer(max_entries=10)
    buffer.record(bot_id, digest("t"))
    unreachable = sessionmaker(
        create_engine("postgresql+psycopg://nobody:x@127.0.0.1:1/none", pool_pre_ping=False)
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        buffer.flush(unreachable)
    assert len(buffer) == 1  # kept for the next batch
    assert buffer.flush(sessions) == 1
    with sessions() as session:
        assert session.get(Bot, bot_id).last_heartbeat_at is not None


def test_the_token_cache_is_bypassed_while_its_listener_is_cut_off(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    cache = CredentialCache(server.url, max_entries=10, ttl_s=60)
    cache.start()
    try:
        wait_until(lambda: cache.active, timeout=10, what="the cache's listener subscribed")
        cache.put("d", KnownBot("b", BotStatus.ACTIVE), generation=cache.generation())
        assert cache.get("d") == KnownBot("b", BotStatus.ACTIVE)
        server.stop()  # a change published now would be missed: the cache must not answer
        wait_until(lambda: not cache.active, timeout=30, what="the cache noticing the outage")
        assert cache.get("d") is None
        server.start()
        wait_until(lambda: cache.active, timeout=30, what="the listener back")
        assert cache.get("d") is None  # cleared: it may have missed a change meanwhile
    finally:
        cache.close()
        server.stop()


def _bot(user_id: str, **fields: object) -> Bot:
    return Bot(user_id=user_id, orchestrator="process", bot="demo", config={}, labels={}, **fields)


def _naive(value: object) -> object:
    """SQLite returns naive datetimes, PostgreSQL aware ones: compare as naive UTC."""
    return value.replace(tzinfo=None) if hasattr(value, "replace") else value
