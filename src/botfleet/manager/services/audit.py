"""Who did what: the actor of every transition and command, and the admin actions' log.

Actors are `key:<key id>` (a user's API call), `admin` (the admin token), or the part of the
manager that acted on its own: `runtime`, `reconciler`, `scheduler`, `orchestrator`.

A request's actor is put on its session when the caller is authenticated (`manager/http/deps.py`):
authentication and the route share the request's one transaction, so whatever the route changes
through that session is attributed to the caller without every service function passing it on.
Work that runs in a session of its own (the reconciler, a launch) has no request actor and is
attributed to its `Source`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from botfleet.manager.core.models import AdminAudit, utcnow
from botfleet.manager.lifecycle.states import Source
from botfleet.manager.services.keyset import PageRequest, read_page

ADMIN = "admin"
_ACTOR_KEY = "botfleet_actor"

# Admin actions, as `GET /admin/audit` names them.
USER_CREATED = "user_created"
USER_UPDATED = "user_updated"  # a limit changed, or the user was disabled or enabled again
KEY_CREATED = "key_created"
KEY_REVOKED = "key_revoked"


def key_actor(key_id: str) -> str:
    return f"key:{key_id}"


def set_request_actor(session: Session, actor: str) -> None:
    """Attribute what this request's session changes to `actor`."""
    session.info[_ACTOR_KEY] = actor


def request_actor(session: Session) -> str | None:
    return session.info.get(_ACTOR_KEY)


def actor_for(session: Session, source: Source) -> str:
    """The actor of a change made for `source`: the request's caller for an API change (`api`
    when the session has none: a test calling a service directly), else the source itself."""
    if source == Source.API:
        return request_actor(session) or Source.API.value
    return source.value


def command_actor(session: Session) -> str:
    """The actor of a command created in this session: the request's caller, else the manager
    acting on its own (a stop the scheduler or reconciler decided passes its actor explicitly)."""
    return request_actor(session) or Source.RECONCILER.value


def record_admin_action(
    session: Session,
    *,
    action: str,
    target: str,
    user_id: str | None,
    change: dict[str, Any],
) -> AdminAudit:
    """One row of the admin log, in the same transaction as the action itself (never secrets:
    a key's prefix at most)."""
    row = AdminAudit(action=action, target=target, user_id=user_id, change=change, at=utcnow())
    session.add(row)
    return row


def list_admin_actions(
    session: Session,
    *,
    user_id: str | None = None,
    since: datetime | None = None,
    page: PageRequest = PageRequest(),
) -> tuple[list[AdminAudit], str | None]:
    """A page of admin actions, newest first (ids are time-ordered); `user_id` keeps the actions
    on that user and its keys, `since` those at or after that time."""
    query = select(AdminAudit)
    if user_id is not None:
        query = query.where(AdminAudit.user_id == user_id)
    if since is not None:
        query = query.where(AdminAudit.at >= since)
    return read_page(session, query, keys=[AdminAudit.id], page=page, descending=True)
