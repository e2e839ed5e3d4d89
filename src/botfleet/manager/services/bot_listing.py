"""The bot list's search by name and its orders other than "newest first", still keyset pages.

`?name=` is a case-insensitive prefix of the name (`lower(name) LIKE 'abc%'`), which
`ix_bots_user_name_prefix` (migration 0018) serves for one user's bots on PostgreSQL.

`?sort=` orders by a key, then by id: `created` (oldest first) or `-created` (newest first, the
default: `services/bots.py` reads those as it always did), `name`/`-name` (its first
NAME_KEY_CHARS characters, lower case; no name sorts first), `status`/`-status` (in lifecycle
order: queued, requested, starting, active, stopping, completed, failed), `heartbeat`/
`-heartbeat` (the last heartbeat; never heard sorts as oldest). The cursor holds the sort, the
last row's key and its id, so a page resumes after exactly that row whatever was added since;
one from another sort, or not made here, answers 422 `invalid_cursor`. Only the default order
is an index scan; the others sort the matching bots of one user, which stays cheap at the
sizes the limits allow.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_
from sqlalchemy.orm import Session

from botfleet.manager.core.column_types import UTCDateTime
from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.core.models import Bot
from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.services.keyset import MAX_CURSOR_CHARS, PageRequest

DEFAULT_SORT = "-created"
SORTS = ("created", "-created", "name", "-name", "status", "-status", "heartbeat", "-heartbeat")
#: Characters of a name that its order looks at: the cursor carries them and must stay short.
NAME_KEY_CHARS = 24
LIFECYCLE_ORDER = ("queued", "requested", "starting", "active", "stopping", "completed", "failed")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def name_starts_with(prefix: str) -> ColumnElement[bool]:
    """Bots whose name starts with `prefix`, in any case (LIKE's wildcards taken literally)."""
    escaped = prefix.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return func.lower(Bot.name).like(escaped + "%", escape="/")


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise Invalid(ErrorCode.INVALID_INPUT, f"sort must be one of: {', '.join(SORTS)}")
    return sort


def _key(field: str) -> ColumnElement[Any]:
    if field == "name":
        return func.substr(func.lower(func.coalesce(Bot.name, "")), 1, NAME_KEY_CHARS)
    if field == "status":
        ranks = {s: n for n, s in enumerate(LIFECYCLE_ORDER) if s in BotStatus._value2member_map_}
        return case(ranks, value=Bot.status, else_=len(LIFECYCLE_ORDER))
    return func.coalesce(Bot.last_heartbeat_at, literal(EPOCH, UTCDateTime()))


def _encode(sort: str, key: Any, bot_id: str) -> str:
    value = key.isoformat() if isinstance(key, datetime) else key
    raw = json.dumps([sort, value, bot_id], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(sort: str, cursor: str) -> tuple[Any, str]:
    refused = Invalid(ErrorCode.INVALID_CURSOR, "cursor is not one this API returned for this list")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise refused
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise refused from exc
    if not isinstance(values, list) or len(values) != 3 or values[0] != sort:
        raise refused
    _, key, bot_id = values
    if not isinstance(bot_id, str) or not 0 < len(bot_id) <= 64:
        raise refused
    field = sort.lstrip("-")
    if field == "status" and type(key) is int and 0 <= key <= len(LIFECYCLE_ORDER):
        return key, bot_id
    if field == "name" and isinstance(key, str) and len(key) <= NAME_KEY_CHARS:
        return key, bot_id
    if field == "heartbeat" and isinstance(key, str):
        try:
            when = datetime.fromisoformat(key)
        except ValueError as exc:
            raise refused from exc
        if when.tzinfo is not None:
            return when, bot_id
    raise refused


def read_sorted_page(
    session: Session, query: Select[Any], *, sort: str, page: PageRequest
) -> tuple[list[Bot], str | None]:
    """One page of `query`'s bots in the order `sort` names (not `created`/`-created`)."""
    descending = sort.startswith("-")
    key = _key(sort.lstrip("-"))
    if page.cursor:
        value, bot_id = _decode(sort, page.cursor)
        if descending:
            after = or_(key < value, and_(key == value, Bot.id < bot_id))
        else:
            after = or_(key > value, and_(key == value, Bot.id > bot_id))
        query = query.where(after)
    order = [key.desc(), Bot.id.desc()] if descending else [key.asc(), Bot.id.asc()]
    keyed = query.add_columns(key.label("sort_key")).order_by(*order).limit(page.limit + 1)
    rows = list(session.execute(keyed).all())
    bots = [row[0] for row in rows[: page.limit]]
    if len(rows) <= page.limit:
        return bots, None
    last = rows[page.limit - 1]
    return bots, _encode(sort, last[1], last[0].id)
