"""`?limit=` and `?cursor=`, the same on every list (`manager/services/keyset.py` reads them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from botfleet.manager.services.keyset import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT, PageRequest


def page_request(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_CHARS,
            description="`next_cursor` of the previous page; omit for the first.",
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageQuery = Annotated[PageRequest, Depends(page_request)]
