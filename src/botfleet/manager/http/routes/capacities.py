"""Capacities an admin sets (admin token): fleet-wide or per label, at most `max_concurrent`
bots holding a slot. Over one, a POST /bots with `queue` waits `queued`; without, 429."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import error_responses
from botfleet.manager.core.queue_models import Capacity
from botfleet.manager.http.deps import AdminDep, SessionDep
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.capacities import CapacityPublic, CapacitySet
from botfleet.manager.schemas.list_page import Page
from botfleet.manager.services import capacities

router = APIRouter(
    prefix="/admin/capacities",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
)


def _public(session: Session, rows: Sequence[Capacity]) -> list[CapacityPublic]:
    used = capacities.usage(session, rows)
    return [
        CapacityPublic(
            id=row.id,
            label=row.label,
            max_concurrent=row.max_concurrent,
            in_use=used[row.id].in_use,
            queued=used[row.id].queued,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


@router.get(
    "",
    response_model=Page[CapacityPublic],
    summary="List capacities",
    description="Every capacity, oldest first, a page at a time, with the bots holding its "
    "slots now (`in_use`) and the queued bots it concerns (`queued`).",
)
def list_capacities(session: SessionDep, page: PageQuery) -> Page[CapacityPublic]:
    rows, next_cursor = capacities.list_capacities(session, page=page)
    return Page(items=_public(session, rows), next_cursor=next_cursor)


@router.put(
    "",
    response_model=CapacityPublic,
    summary="Set a capacity",
    description=(
        "Create or change the capacity of `label` (`key:value`), or the fleet-wide one "
        "(no `label`): at most `max_concurrent` of those bots hold a slot (every live status "
        "but `queued`) at once, whoever they belong to; 0 lets none start. Over it, a POST "
        "/bots with `queue` waits `queued` (admitted in priority order, then first come, as "
        "slots free), without it answers 429 `concurrency_limit`. Raising it admits queued "
        "bots within a timer interval; lowering it stops no running bot. Audited "
        "(`capacity_set`). 409 when another change of the same capacity raced this one."
    ),
)
def set_capacity(body: CapacitySet, session: SessionDep) -> CapacityPublic:
    row = capacities.set_capacity(
        session, label=body.label_pair(), max_concurrent=body.max_concurrent
    )
    return _public(session, [row])[0]


@router.delete(
    "/{capacity_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a capacity",
    description="Its bots are then limited by their users' limits alone; queued bots it held "
    "back are admitted within a timer interval. Audited (`capacity_removed`). 404 "
    "`capacity_not_found`.",
)
def remove_capacity(capacity_id: str, session: SessionDep) -> Response:
    capacities.remove_capacity(session, capacity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
