"""Telling "the disk is full" from the database's other failures.

A full data disk is not an outage of the database: reads still work, and writes work again as
soon as space is freed, with no restart. The API says so with its own code (503 `disk_full`,
core/errors.py) instead of `database_unavailable`.
"""

from __future__ import annotations

import errno

#: PostgreSQL's SQLSTATE `disk_full` ("could not extend file …: No space left on device"; any
#: file write that fails with ENOSPC).
PG_DISK_FULL = "53100"
#: SQLite's primary result code SQLITE_FULL ("database or disk is full").
SQLITE_FULL = 13
#: The same, by message, for drivers that give no code.
_MESSAGES = ("database or disk is full", "no space left on device", "could not extend file")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (a SQLAlchemy error, a driver's, or an OSError) says the disk is full."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    if getattr(cause, "sqlstate", None) == PG_DISK_FULL:
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:  # extended codes keep the low byte
        return True
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(cause).lower()
    return any(message in text for message in _MESSAGES)
