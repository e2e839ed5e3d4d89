"""The shape of every list answer: one keyset page (`manager/services/keyset.py`)."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """Every list answers a page (`manager/services/keyset.py`): nothing unbounded is built."""

    items: list[Item]
    next_cursor: str | None = Field(
        None, description="Pass as `?cursor=` for the next page; null on the last one."
    )
