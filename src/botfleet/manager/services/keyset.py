"""Keyset pages, the one way every list of the API is read.

A page is `limit` rows after the cursor's key in a fixed order, read with `WHERE key > cursor
ORDER BY key LIMIT n + 1`: never OFFSET, so page 1,000 costs what page 1 does and rows added or
acknowledged meanwhile never shift a page (no duplicates, nothing skipped). The cursor is the
last row's key as opaque base64 JSON; one this API did not make answers 422 `invalid_cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from botfleet.manager.core.errors import ErrorCode, Invalid

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 200
MAX_KEY_CHARS = 64  # the longest key column (ids are 36 characters)
MAX_INT_KEY = 2**63 - 1  # BIGINT

Row = TypeVar("Row")
Key = str | int


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked for: `?limit=` (1..MAX_LIMIT) and `?cursor=`."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def encode_cursor(values: Sequence[Key]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> tuple[Key, ...]:
    """The key a cursor holds, checked against the key's column types (`kinds`)."""
    refused = Invalid(ErrorCode.INVALID_CURSOR, "cursor is not one this API returned for this list")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise refused
    try:  # ValueError covers bad JSON, non-ASCII input and undecodable bytes
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise refused from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise refused
    for value, kind in zip(values, kinds, strict=True):
        if kind is int:  # bool is an int to Python, never to this API
            ok = type(value) is int and 0 <= value <= MAX_INT_KEY
        else:
            ok = isinstance(value, str) and 0 < len(value) <= MAX_KEY_CHARS
        if not ok:
            raise refused
    return tuple(values)


def _after(keys: Sequence[InstrumentedAttribute[Any]], values: Sequence[Key], desc: bool) -> Any:
    """Rows strictly after `values` in the lexicographic order of `keys`."""
    column, rest = keys[0], keys[1:]
    beyond: ColumnElement[bool] = column < values[0] if desc else column > values[0]
    if not rest:
        return beyond
    return or_(beyond, and_(column == values[0], _after(rest, values[1:], desc)))


def read_page(
    session: Session,
    query: Select[Row],
    *,
    keys: Sequence[InstrumentedAttribute[Any]],
    page: PageRequest,
    descending: bool = False,
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows ordered by `keys` (unique together, all one direction), and
    the cursor of the next page (None on the last one)."""
    if page.cursor:
        kinds = [k.property.columns[0].type.python_type for k in keys]
        query = query.where(_after(keys, decode_cursor(page.cursor, kinds), descending))
    order = [k.desc() if descending else k.asc() for k in keys]
    rows = list(session.scalars(query.order_by(*order).limit(page.limit + 1)))
    if len(rows) <= page.limit:
        return rows, None
    last = rows[page.limit - 1]
    return rows[: page.limit], encode_cursor([getattr(last, k.key) for k in keys])
