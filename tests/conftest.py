"""Fixtures: a real Redis, a fresh database (PostgreSQL or SQLite) and a real manager process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Manager, RedisServer, running_manager

DB_FIXTURES = {"manager", "restartable", "outage", "sessions"}


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
    with running_manager(tmp_path_factory.mktemp("manager"), redis_server.url) as instance:
        yield instance
