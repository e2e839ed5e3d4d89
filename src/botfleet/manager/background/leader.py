"""One leader among manager replicas: only the leader runs the leader-only loops
(the reconciler, the webhook sender; `manager/background/loops.py` asks before each run).

PostgreSQL: a session-level advisory lock held on a connection of its own; if the leader dies or
loses its connection, PostgreSQL releases the lock and another replica takes it on its next tick.
SQLite (one machine): an exclusive `flock` on a file beside the database, released by the kernel
when the process dies.

`hold()` answers False only when another replica leads; when the database cannot be asked it
raises `LeaseUnavailable`, so the loops count a failure (and `/readyz` shows it) instead of
quietly standing by. A lost leader connection is such a failure too, before the lock is tried
again on the next tick: the loops must know the lead began anew (their `on_lead`).
"""

from __future__ import annotations

import fcntl
import logging
import threading
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from botfleet.manager.background.loops import DatabaseUnreachable, describe
from botfleet.manager.core import metrics

log = logging.getLogger(__name__)

#: Any constant works, as long as every replica uses the same one.
RECONCILER_LOCK_ID = 0x626F74666C656574 + 1


class LeaseUnavailable(DatabaseUnreachable):
    """The lease cannot be checked or taken: the database does not answer."""


class LeaderLease:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._lock_file: IO[str] | None = None
        # Several scheduler jobs ask from their own threads; the connection serves one at a time.
        self._mutex = threading.Lock()

    def hold(self) -> bool:
        """True while this replica is the leader; tries to become it when it is not.

        False: another replica leads. Raises `LeaseUnavailable` when the database cannot be asked.
        """
        try:
            with self._mutex:
                held = self._check_or_take()
        except LeaseUnavailable:
            metrics.LEADER.set(0)
            raise
        metrics.LEADER.set(1 if held else 0)
        return held

    def _check_or_take(self) -> bool:
        if self.engine.dialect.name == "sqlite":
            return self._file_lock()
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()  # never sit idle in a transaction
                return True
            except SQLAlchemyError as exc:
                log.warning("lost the leader connection; the lock is released")
                self._drop_connection()
                # Not taken again in the same breath: the loops must see that the lead was
                # lost (they restart their grace, manager/background/loops.py `on_lead`); the next
                # tick tries to take it.
                raise LeaseUnavailable(f"lost the leader connection: {describe(exc)}") from exc
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            raise LeaseUnavailable(f"cannot try the leader lock: {describe(exc)}") from exc
        try:
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:id)"), {"id": RECONCILER_LOCK_ID}
            ).scalar()
            connection.commit()  # the lock is the session's, not the transaction's
        except SQLAlchemyError as exc:
            connection.close()
            raise LeaseUnavailable(f"cannot try the leader lock: {describe(exc)}") from exc
        if not taken:
            connection.close()
            return False
        log.info("this replica is now the leader: it runs the reconciler")
        self._connection = connection
        return True

    def _file_lock(self) -> bool:
        if self._lock_file is not None:
            return True
        database = self.engine.url.database or "botfleet.db"
        path = Path(database).with_suffix(".leader.lock")
        try:
            handle = path.open("a")
        except OSError as exc:
            raise LeaseUnavailable(f"cannot open the leader lock file: {describe(exc)}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        log.info("this process is now the leader: it runs the reconciler")
        return True

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None

    def release(self) -> None:
        self._drop_connection()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
