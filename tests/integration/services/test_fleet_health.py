"""The Fleet-health page from a real database: bots by status per 5-minute bucket from the
transitions table, users' usage. The arithmetic alone: tests/unit/test_fleet_health_figures.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import ApiKey, Bot, BotTransition, User
from botfleet.manager.lifecycle.states import BotStatus
from botfleet.manager.services.user_usage import usage_by_user
from botfleet.manager.ui import health_data as fh

S = BotStatus
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


# ---- percentiles -----------------------------------------------------------------------------


# ---- bots by status --------------------------------------------------------------------------


def _story() -> tuple[list[fh.BotLife], list[fh.Change]]:
    """A: active since before the window, stopped 22 min ago, completed 21 min ago.
    B: created 12 min ago, starting at 11, active at 10.5. C: created 7 min ago, still waiting."""
    bots = [
        fh.BotLife("a", ago(70), S.COMPLETED),
        fh.BotLife("b", ago(12), S.ACTIVE),
        fh.BotLife("c", ago(7), S.REQUESTED),
    ]
    changes = [
        fh.Change("a", S.ACTIVE, ago(22)),
        fh.Change("a", S.STOPPING, ago(21)),
        fh.Change("b", S.REQUESTED, ago(11)),
        fh.Change("b", S.STARTING, ago(10.5)),
    ]
    return bots, changes


def _expected() -> list[dict[BotStatus, int]]:
    """The story above at the end of each bucket: -55, -50, …, -5, now."""
    rows = []
    for minutes in range(55, -1, -5):
        row = dict.fromkeys(fh.STATUS_ORDER, 0)
        row[S.ACTIVE if minutes > 22 else S.COMPLETED] += 1  # A
        if minutes <= 10:
            row[S.ACTIVE] += 1  # B (not yet created at -15)
        if minutes <= 5:
            row[S.REQUESTED] += 1  # C
        rows.append(row)
    return rows


@pytest.fixture
def story_db(sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], str, str]:
    """The story in a real database for user `one`, plus bots the chart must leave out or
    count only for the admin."""
    with sessions.begin() as session:
        one, two = User(name="one", max_concurrent_bots=5), User(name="two", max_concurrent_bots=5)
        session.add_all([one, two])
        session.flush()
        bots, changes = _story()
        ended = {"a": ago(21)}
        for b in bots:
            session.add(
                Bot(
                    name=b.id,
                    user_id=one.id,
                    status=b.status,
                    orchestrator="process",
                    bot="demo",
                    created_at=b.created_at,
                    ended_at=ended.get(b.id),
                )
            )
        session.flush()
        ids = {b.name: b.id for b in session.query(Bot).all()}
        to_of = {("a", S.ACTIVE): S.STOPPING, ("a", S.STOPPING): S.COMPLETED}
        to_of |= {("b", S.REQUESTED): S.STARTING, ("b", S.STARTING): S.ACTIVE}
        for c in changes:
            session.add(
                BotTransition(
                    bot_id=ids[c.bot_id],
                    from_status=c.from_status.value,
                    to_status=to_of[(c.bot_id, c.from_status)].value,
                    reason="test",
                    source="api",
                    at=c.at,
                )
            )
        # Ended long before the window: never counted. Another user's live bot: admin only.
        old = Bot(
            user_id=one.id,
            status=S.FAILED,
            orchestrator="process",
            bot="demo",
            created_at=ago(300),
            ended_at=ago(200),
        )
        other = Bot(
            user_id=two.id, status=S.ACTIVE, orchestrator="process", bot="demo", created_at=ago(90)
        )
        session.add_all([old, other])
        session.flush()
        session.add(
            BotTransition(
                bot_id=old.id,
                from_status="active",
                to_status="failed",
                reason="crashed",
                source="runtime",
                at=ago(200),
            )
        )
        return sessions, one.id, two.id


def test_the_chart_reads_a_users_bots_from_the_transitions_table(
    story_db: tuple[sessionmaker[Session], str, str],
) -> None:
    sessions, one, two = story_db
    with sessions() as session:
        mine = fh.status_chart(session, user_id=one, now=NOW)
        theirs = fh.status_chart(session, user_id=two, now=NOW)
        everyone = fh.status_chart(session, user_id=None, now=NOW)
    assert [b.counts for b in mine.buckets] == _expected()
    assert not mine.partial and mine.peak == 3
    assert [b.counts[S.ACTIVE] for b in theirs.buckets] == [1] * 12
    assert [b.total for b in theirs.buckets] == [1] * 12
    assert [b.total for b in everyone.buckets] == [x.total + 1 for x in mine.buckets]


# ---- geometry and usage ----------------------------------------------------------------------


def test_usage_counts_live_bots_and_keys_that_sign_in(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        user, idle = User(name="u", max_concurrent_bots=3), User(name="idle", max_concurrent_bots=1)
        session.add_all([user, idle])
        session.flush()
        for status in (S.ACTIVE, S.ACTIVE, S.STARTING, S.COMPLETED, S.FAILED):
            session.add(Bot(user_id=user.id, status=status, orchestrator="process", bot="demo"))
        for n, revoked in enumerate((None, NOW, None)):
            session.add(
                ApiKey(user_id=user.id, key_hash=f"{n:064d}", prefix="bf_x", revoked_at=revoked)
            )
        session.add(
            ApiKey(user_id=user.id, key_hash="9" * 64, prefix="bf_y", expires_at=ago(60 * 24))
        )
        user_id, idle_id = user.id, idle.id
    with sessions() as session:
        usage = usage_by_user(session, [user_id, idle_id])
    assert usage[user_id].live == 3
    assert usage[user_id].live_by_status == {S.STARTING: 1, S.ACTIVE: 2}
    assert usage[user_id].live_keys == 2
    assert usage[idle_id].live == 0 and usage[idle_id].live_keys == 0
