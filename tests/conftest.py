"""Fixtures: a real Redis, a fresh database (PostgreSQL or SQLite) and a real manager process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Manager, RedisServer, fresh_database_url

DB_FIXTURES = {"manager", "restartable", "sessions"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that touch the database are marked `db`: they run again on SQLite."""
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """One manager per test module; each test makes its own user, so tests stay independent."""
    data_dir: Path = tmp_path_factory.mktemp("manager")
    instance = Manager(
        data_dir=data_dir,
        database_url=fresh_database_url(data_dir),
        redis_url=redis_server.url,
    )
    instance.start()
    yield instance
    instance.stop()
    _kill_leftover_bots(data_dir)


def _kill_leftover_bots(data_dir: Path) -> None:
    """Bots outlive the manager by design; the suite must not leave them behind."""
    from orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

    orchestrator = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=data_dir))
    for workload in orchestrator.list_workloads():
        if not workload.status.is_gone:
            orchestrator.stop(workload.runtime_ref, grace_s=1)
