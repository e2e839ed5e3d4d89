"""The Fleet-health page from a real database: bots by status per 5-minute bucket from the
transitions table, users' usage. The arithmetic alone: tests/unit/test_fleet_health_figures.py."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import ApiKey, Bot, BotTransition, User
from botfleet.manager.lifecycle.states import BotStatus
from botfleet.manager.services.user_usage import usage_by_user
from botfleet.manager.ui import health_data as fh
from tests.fleet_health_story import NOW, ago, expected, story

S = BotStatus


# ---- percentiles -----------------------------------------------------------------------------


# ---- bots by status --------------------------------------------------------------------------


@pytest.fixture
def story_db(sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], str, str]:
    """The story in a real database for user `one`, plus bots the chart must leave out or
    count only for the admin."""
    with sessions.begin() as session:
        one, two = User(name="one", max_concurrent_bots=5), User(name="two", max_concurrent_bots=5)
        session.add_all([one, two])
        session.flush()
        bots, changes = story()
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
    assert [b.counts for b in mine.buckets] == expected()
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
