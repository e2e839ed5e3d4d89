"""Everything that runs after a commit, registered in one place, in the order it runs.

The manager has one sessionmaker; `install` puts these listeners on it once, at start-up
(`manager/app.py`). When one of its sessions commits, in this order:

1. Credentials (`hot_path/credentials.py`): the credential cache forgets the bot tokens, API
   keys and users the transaction changed, and tells every other replica. First, so that no
   request after the commit is let in by an entry the commit made untrue.
2. Per-bot Redis users (`messaging/bot_acl.py`, with BOTFLEET_BOT_REDIS_ACL): the users of the
   bots the transaction ended are deleted, on the launcher's threads.
3. The event outbox (`messaging/outbox.py`): one wake-up for every replica's event streams and
   the webhook sender, when the transaction wrote events.
4. The unit of work (`services/unit_of_work.py`): the side effects a request queued with
   `after_commit` (a launch, a publish, a signal) are released; `unit_of_work` runs them once
   the session is closed, its connection back in the pool, in the order they were queued.

Steps 1-3 are best effort: Redis down delays them and never fails a commit (cache entries
expire, housekeeping converges the users, streams poll). What they act on is noted before the
commit: before a flush (changed credentials), after a flush (ended bots), as an event is
recorded (the outbox); a rollback drops the notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.hot_path.credentials import (
    CredentialCache,
    drop_credential_changes,
    note_credential_changes,
    publish_credential_changes,
)
from botfleet.manager.messaging.bot_acl import (
    BotRedisUsers,
    close_ended_users,
    drop_ended_bots,
    note_ended_bots,
)
from botfleet.manager.messaging.outbox import drop_event_wake, wake_event_streams
from botfleet.manager.services.unit_of_work import release_effects


@dataclass
class AfterCommit:
    """The listeners installed on one sessionmaker, and the Redis client they publish with."""

    sessions: sessionmaker[Session]
    client: redis.Redis | None
    listeners: list[tuple[str, Callable[..., None]]] = field(default_factory=list)

    def close(self) -> None:
        """Remove the listeners (a test's sessionmaker outlives them) and close the client."""
        for name, listener in self.listeners:
            sa_event.remove(self.sessions, name, listener)
        self.listeners.clear()
        if self.client is not None:
            self.client.close()


def install(
    sessions: sessionmaker[Session],
    *,
    redis_url: str | None,
    credentials: CredentialCache | None,
    redis_users: BotRedisUsers | None,
    submit: Callable[..., None],
) -> AfterCommit:
    """Register every after-commit listener on `sessions` (see the module docstring for what
    and in which order). `credentials` None: the credential cache is off (its notes too);
    `redis_users` None: bots share the Redis URL; `submit` runs work off the committing
    thread (`Launcher.submit`)."""
    client = (
        redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        if redis_url
        else None
    )

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        if credentials is not None:
            note_credential_changes(session)

    def after_flush(session: Session, _context: Any) -> None:
        if redis_users is not None:
            note_ended_bots(session)

    def after_commit(session: Session) -> None:
        if credentials is not None and client is not None:
            publish_credential_changes(session, credentials, client)  # 1
        if redis_users is not None:
            close_ended_users(session, redis_users, submit)  # 2
        if client is not None:
            wake_event_streams(session, client)  # 3
        release_effects(session)  # 4

    def after_rollback(session: Session) -> None:
        drop_credential_changes(session)
        drop_ended_bots(session)
        drop_event_wake(session)

    installed = AfterCommit(sessions, client)
    for name, listener in (
        ("before_flush", before_flush),
        ("after_flush", after_flush),
        ("after_commit", after_commit),
        ("after_rollback", after_rollback),
    ):
        sa_event.listen(sessions, name, listener)
        installed.listeners.append((name, listener))
    return installed
