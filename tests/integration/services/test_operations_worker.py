"""The bulk operations' worker (issue 30), driven tick by tick over a real database: it takes a
bounded batch per tick, users take turns (a small operation is not stuck behind a big one),
a cancel stops it between batches and the bots already acted on stay so, a bot's refusal is
that bot's failed result, and retention deletes old operations with their results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.operations import OperationsWorker
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.operation_models import Operation, OperationResult
from botfleet.manager.core.settings import Settings
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.schemas.operations import BulkActionCreate
from botfleet.manager.services import operations, retention
from botfleet.manager.services.unit_of_work import unit_of_work
from botfleet.manager.services.users import create_user
from tests.fakes import FakeOrchestrator
from tests.fleet_parts import FleetParts, build_fleet
from tests.support import RedisServer

LATER = "2999-01-01T00:00:00Z"


@pytest.fixture
def fleet(sessions: sessionmaker[Session], redis_server: RedisServer) -> Iterator[FleetParts]:
    instance = build_fleet(sessions, FakeOrchestrator(), Settings(redis_url=redis_server.url))
    yield instance
    instance.close()


def user_with_bots(fleet: FleetParts, name: str, count: int) -> str:
    """A user with `count` bots scheduled far ahead (rows only: a stop cancels them)."""
    with unit_of_work(fleet.sessions) as session:
        user, _ = create_user(session, name=name, max_concurrent_bots=count)
        for _ in range(count):
            data = BotCreate.model_validate_json(
                json.dumps({"bot": "demo", "config": {}, "start_at": LATER})
            )
            fleet.bots.start_bot(session, user_id=user.id, data=data)
        return user.id


def stop_all(fleet: FleetParts, user_id: str) -> str:
    body = BulkActionCreate.model_validate_json(
        '{"action": "stop", "selector": {"status": ["requested"]}}'
    )
    with unit_of_work(fleet.sessions) as session:
        return operations.create_operation(session, user_id=user_id, body=body).id


def progress(fleet: FleetParts, operation_id: str) -> tuple[str, int, int]:
    with fleet.sessions() as session:
        operation = session.get(Operation, operation_id)
        assert operation is not None
        return operation.status, operation.done, operation.failed


def test_users_take_turns_a_bounded_batch_at_a_time(fleet: FleetParts) -> None:
    big = user_with_bots(fleet, "big", 30)
    small = user_with_bots(fleet, "small", 3)
    big_op = stop_all(fleet, big)
    small_op = stop_all(fleet, small)  # created after the big one
    worker = OperationsWorker(
        sessions=fleet.sessions, bots=fleet.bots, launcher=fleet.launcher, batch=5, tick_bots=8
    )

    worker.tick()  # 5 of the big one's, then the small one's 3: the budget of 8 is spent
    assert progress(fleet, big_op) == ("running", 5, 0)
    assert progress(fleet, small_op) == ("done", 3, 0)
    worker.tick()
    assert progress(fleet, big_op) == ("running", 13, 0)  # alone now: 8 a tick
    for _ in range(3):
        worker.tick()
    assert progress(fleet, big_op) == ("done", 30, 0)
    with fleet.sessions() as session:
        ended = session.scalar(
            select(func.count()).select_from(Bot).where(Bot.status == "completed")
        )
        assert ended == 33
        finished = session.get(Operation, big_op)
        assert finished is not None and finished.finished_at is not None


def test_a_cancel_stops_between_batches_and_refusals_are_results(fleet: FleetParts) -> None:
    user_id = user_with_bots(fleet, "cancels", 12)
    with transaction(fleet.sessions) as session:  # one bot ended already: a stop is idempotent
        first = session.scalars(select(Bot).where(Bot.user_id == user_id).order_by(Bot.id)).first()
        assert first is not None
        first.status, first.ended_at = "completed", utcnow()
    operation_id = stop_all(fleet, user_id)  # the 11 still requested
    reconfigure = BulkActionCreate.model_validate_json(
        '{"action": "reconfigure", "selector": {"status": ["requested"]}, "config": {"n": 1}}'
    )
    with unit_of_work(fleet.sessions) as session:
        refused_op = operations.create_operation(session, user_id=user_id, body=reconfigure).id

    worker = OperationsWorker(
        sessions=fleet.sessions, bots=fleet.bots, launcher=fleet.launcher, batch=4, tick_bots=4
    )
    worker.tick()  # the older operation first: 4 stopped
    with unit_of_work(fleet.sessions) as session:
        cancelled = operations.cancel_operation(session, operation_id, user_id=user_id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    for _ in range(4):
        worker.tick()
    assert progress(fleet, operation_id) == ("cancelled", 4, 0)
    with fleet.sessions() as session:
        shown, _ = operations.list_results(session, operation_id, user_id=user_id)
        assert len(shown) == 4 and all(r.ok for r in shown)
        requested = session.scalar(
            select(func.count()).select_from(Bot).where(Bot.status == "requested")
        )
        assert requested == 7  # the rest were never acted on
        # The reconfigure ran meanwhile on the 11 selected: each refused (not running yet).
        assert progress(fleet, refused_op) == ("done", 0, 11)
        failed, _ = operations.list_results(session, refused_op, user_id=user_id, ok=False)
        assert {r.error["code"] for r in failed if r.error} == {"illegal_transition"}

    # Retention: an operation older than the events' retention goes with its results.
    with transaction(fleet.sessions) as session:
        old = utcnow() - timedelta(days=10)
        session.execute(update(Operation).values(created_at=old))
        session.execute(update(OperationResult).values(created_at=old))
    retention.prune_events(fleet.sessions, days=7, budget=retention.Budget())
    with fleet.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Operation)) == 0
        assert session.scalar(select(func.count()).select_from(OperationResult)) == 0
