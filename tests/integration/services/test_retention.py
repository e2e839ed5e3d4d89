"""Nothing grows forever (issue 15, item 4): ended bots and their history are pruned after
`BOTFLEET_RETAIN_ENDED_BOTS_DAYS`, the outbox and webhook deliveries after
`BOTFLEET_RETAIN_EVENTS_DAYS`, in small batches; `DELETE /bots/{id}` deletes one ended bot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import (
    Bot,
    BotAttempt,
    BotLabel,
    BotTransition,
    Command,
    Event,
    new_id,
    utcnow,
)
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.messaging.bot_acl import BotRedisUsers, username
from botfleet.manager.services import retention
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.support import ADMIN_TOKEN, Manager, RedisServer, wait_for_status

HISTORY = (BotTransition, Command, BotAttempt, BotLabel, WebhookDelivery)


class Forgetful(FakeOrchestrator):
    """Remembers whose log files it was told to delete."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted_logs: list[str] = []

    def delete_logs(self, bot_id: str) -> None:
        self.deleted_logs.append(bot_id)


@pytest.fixture
def fleet(sessions: sessionmaker[Session], redis_server: RedisServer) -> Iterator[FleetParts]:
    users = BotRedisUsers(redis_server.url)
    instance = build_fleet(
        sessions, Forgetful(), Settings(redis_url=redis_server.url), redis_users=users
    )
    yield instance
    instance.close()
    users.close()


def bot_with_history(
    fleet: FleetParts, *, status: BotStatus, ended_days_ago: float | None, rows: int = 1200
) -> str:
    """A bot with `rows` transitions and commands (each with a config), attempts, labels and
    webhook deliveries, written straight to the database."""
    now = utcnow()
    ended_at = now - timedelta(days=ended_days_ago) if ended_days_ago is not None else None
    with transaction(fleet.sessions) as session:
        user, _ = create_user(session, name=f"u-{new_id()[-12:]}", max_concurrent_bots=5)
        bot = Bot(user_id=user.id, status=status, orchestrator="process", bot="demo",
                  ended_at=ended_at)  # fmt: skip
        session.add(bot)
        session.flush()
        bot_id = bot.id
        session.execute(
            insert(BotTransition),
            [dict(bot_id=bot_id, from_status="starting", to_status="active", reason="started",
                  source="runtime", detail="x" * 100, attempt=1) for _ in range(rows)],
        )  # fmt: skip
        session.execute(
            insert(Command),
            [dict(id=new_id(), bot_id=bot_id, action="reconfigure", status="acked",
                  config={"blob": "y" * 500}, expires_at=now) for _ in range(rows)],
        )  # fmt: skip
        session.add_all([BotAttempt(bot_id=bot_id, attempt=n) for n in (1, 2, 3)])
        session.add(BotLabel(bot_id=bot_id, key="team", value="sales"))
        endpoint = WebhookEndpoint(user_id=user.id, bot_id=bot_id, url="https://x.test/h",
                                   secret_sealed="sealed")  # fmt: skip
        session.add(endpoint)
        session.flush()
        delivery = WebhookDelivery(endpoint_id=endpoint.id, event_id=1, bot_id=bot_id,
                                   payload={}, expires_at=now)  # fmt: skip
        session.add(delivery)
        session.flush()
        session.add(WebhookAttempt(delivery_id=delivery.id, status_code=500))
    return bot_id


def counts(fleet: FleetParts, bot_id: str) -> dict[str, int]:
    """Rows left about the bot, by table (SQL counts, not the API)."""
    with fleet.sessions() as session:
        found = {
            table.__tablename__: session.scalar(
                select(func.count()).select_from(table).where(table.bot_id == bot_id)
            )
            or 0
            for table in HISTORY
        }
        found["bots"] = session.scalar(select(func.count()).where(Bot.id == bot_id)) or 0
        found["webhook_endpoints"] = (
            session.scalar(select(func.count()).where(WebhookEndpoint.bot_id == bot_id)) or 0
        )
        found["webhook_attempts"] = session.scalar(select(func.count(WebhookAttempt.id))) or 0
    return found


def test_an_old_ended_bot_goes_with_all_its_history_in_small_batches(fleet: FleetParts) -> None:
    old = bot_with_history(fleet, status=BotStatus.COMPLETED, ended_days_ago=31)
    recent = bot_with_history(fleet, status=BotStatus.FAILED, ended_days_ago=29, rows=10)
    live = bot_with_history(fleet, status=BotStatus.ACTIVE, ended_days_ago=None, rows=10)
    users = fleet.redis_users
    assert users is not None
    users.create({old: "a" * 64})
    forget = retention.Forget.of(fleet.launcher)

    # One tick's budget is bounded: two DELETEs of at most 500 rows, and the bot stays meanwhile.
    gone = retention.prune_ended_bots(fleet.sessions, forget, days=30, budget=retention.Budget(2))
    left = counts(fleet, old)
    assert gone == 0 and left["bots"] == 1
    assert left["bot_transitions"] == 200 and left["commands"] == 1200

    housekeeping = fleet.housekeeping()
    for _ in range(3):
        assert housekeeping.run_once() == []
    assert all(n == 0 for name, n in counts(fleet, old).items() if name != "webhook_attempts")
    assert fleet.orchestrator.deleted_logs == [old]  # type: ignore[attr-defined]
    assert users._client.execute_command("ACL", "GETUSER", username(old)) is None
    # Untouched: a bot that ended within the retention, and a live one.
    for kept in (recent, live):
        left = counts(fleet, kept)
        assert left["bots"] == 1 and left["bot_transitions"] == 10 and left["commands"] == 10
        assert left["bot_attempts"] == 3 and left["webhook_deliveries"] == 1


def test_zero_keeps_ended_bots_forever(fleet: FleetParts) -> None:
    old = bot_with_history(fleet, status=BotStatus.COMPLETED, ended_days_ago=3650, rows=5)
    forget = retention.Forget.of(fleet.launcher)
    assert (
        retention.prune_ended_bots(fleet.sessions, forget, days=0, budget=retention.Budget()) == 0
    )
    assert counts(fleet, old)["bot_transitions"] == 5 and counts(fleet, old)["bots"] == 1


def test_old_outbox_events_and_deliveries_go(fleet: FleetParts) -> None:
    bot_id = bot_with_history(fleet, status=BotStatus.ACTIVE, ended_days_ago=None, rows=1)
    now = utcnow()
    with transaction(fleet.sessions) as session:
        user_id = session.scalar(select(Bot.user_id).where(Bot.id == bot_id))
        session.execute(
            insert(Event),
            [dict(user_id=user_id, bot_id=bot_id, kind="transition", data={},
                  at=now - timedelta(days=8)) for _ in range(1100)]
            + [dict(user_id=user_id, bot_id=bot_id, kind="transition", data={}, at=now)
               for _ in range(7)],
        )  # fmt: skip
        session.execute(  # the bot's delivery is 8 days old
            update(WebhookDelivery).values(created_at=now - timedelta(days=8))
        )
    housekeeping = fleet.housekeeping()
    assert housekeeping.run_once() == []
    with fleet.sessions() as session:
        assert session.scalar(select(func.count(Event.id))) == 7
        assert session.scalar(select(func.count(WebhookDelivery.id))) == 0
        assert session.scalar(select(func.count(WebhookAttempt.id))) == 0
    assert counts(fleet, bot_id)["bot_transitions"] == 1, "a live bot's history stays"

    # 0 keeps them.
    with transaction(fleet.sessions) as session:
        session.execute(update(Event).values(at=now - timedelta(days=365)))
    assert retention.prune_events(fleet.sessions, days=0, budget=retention.Budget()) == 0
    with fleet.sessions() as session:
        assert session.scalar(select(func.count(Event.id))) == 7


# ---- DELETE /bots/{id} against a real manager (process backend) -------------------------------


def test_delete_an_ended_bot(manager: Manager) -> None:
    _, client = manager.new_user()
    _, stranger = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    wait_for_status(client, bot_id, {"active"})
    log_file = manager.data_dir / "logs" / f"{bot_id}.log"

    live = client.delete(f"/bots/{bot_id}")
    assert (live.status_code, live.json()["detail"]["code"]) == (409, "bot_live")
    assert stranger.delete(f"/bots/{bot_id}").status_code == 404
    assert client.delete(f"/bots/{new_id()}").status_code == 404

    client.post(f"/bots/{bot_id}/stop")
    wait_for_status(client, bot_id, {"completed"})
    assert log_file.exists()
    assert stranger.delete(f"/bots/{bot_id}").status_code == 404, "still not theirs"
    assert client.get(f"/bots/{bot_id}").status_code == 200

    answer = client.delete(f"/bots/{bot_id}", params={"purge_state": 1})
    assert answer.status_code == 204, answer.text
    assert client.get(f"/bots/{bot_id}").status_code == 404
    assert client.get(f"/bots/{bot_id}/transitions").status_code == 404
    assert not log_file.exists(), "its logs went with it"
    assert client.delete(f"/bots/{bot_id}").status_code == 404


def test_the_admin_may_delete_any_users_ended_bot(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    wait_for_status(client, bot_id, {"active"})
    client.post(f"/bots/{bot_id}/stop")
    wait_for_status(client, bot_id, {"completed"})
    admin = httpx.delete(
        f"{manager.url}/bots/{bot_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert admin.status_code == 204, admin.text
    assert client.get(f"/bots/{bot_id}").status_code == 404
