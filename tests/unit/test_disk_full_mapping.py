"""A full disk is told from the database's other failures and answered 503 `disk_full`.

SQLite's SQLITE_FULL is produced for real by tests/integration/resilience/test_disk_full.py (a
small tmpfs the test fills). PostgreSQL's cannot be produced cheaply (it needs its data directory
on a full filesystem), so its SQLSTATE 53100 `disk_full` is checked here, on the mapping.
"""

from __future__ import annotations

import errno
import sqlite3

import psycopg.errors
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from botfleet.manager.core.disk_full import disk_full
from botfleet.manager.core.errors import install_error_handlers


def sqlite_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # type: ignore[attr-defined]  # what sqlite3 sets (SQLITE_FULL)
    return exc


def wrapped(orig: Exception) -> OperationalError:
    """As SQLAlchemy raises a driver's error."""
    return OperationalError("INSERT INTO users ...", {}, orig)


PG_FULL = psycopg.errors.DiskFull(
    'could not extend file "base/16384/16397": No space left on device'
)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(PG_FULL),
        wrapped(sqlite_full()),
        wrapped(sqlite3.OperationalError("database or disk is full")),  # no code: by message
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["postgresql-53100", "sqlite-full", "sqlite-message", "enospc"],
)
def test_these_say_the_disk_is_full(exc: Exception) -> None:
    assert disk_full(exc)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(psycopg.errors.AdminShutdown("terminating connection")),
        wrapped(sqlite3.OperationalError("database is locked")),
        OSError(errno.EACCES, "Permission denied"),
    ],
    ids=["postgresql-down", "sqlite-locked", "eacces"],
)
def test_these_do_not(exc: Exception) -> None:
    assert not disk_full(exc)


def test_the_api_answers_503_disk_full_with_retry_after() -> None:
    app = FastAPI()
    install_error_handlers(app)
    raised = {
        "pg-full": wrapped(PG_FULL),
        "sqlite-full": wrapped(sqlite_full()),
        "pg-down": wrapped(psycopg.errors.AdminShutdown("terminating connection")),
    }

    @app.post("/{what}")
    def write(what: str) -> None:
        raise raised[what]

    with TestClient(app, raise_server_exceptions=False) as http:
        for what in ("pg-full", "sqlite-full"):
            answer = http.post(f"/{what}")
            assert answer.status_code == 503, (what, answer.text)
            assert answer.json()["detail"]["code"] == "disk_full"
            assert int(answer.headers["Retry-After"]) >= 1
        down = http.post("/pg-down")
        assert (down.status_code, down.json()["detail"]["code"]) == (503, "database_unavailable")
