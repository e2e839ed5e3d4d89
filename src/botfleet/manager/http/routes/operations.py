"""Bulk operations (`POST /bots/actions`, `/operations/...`) and bot edits (`PATCH /bots/{id}`,
`GET /bots/{id}/edits`). The bulk actions run through the single-bot routes' services, a batch
at a time on the leader (manager/background/operations.py); docs/how-to/bulk-operations.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse

from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import AppStateDep, CurrentUser, SessionDep, Viewer
from botfleet.manager.http.idempotency import Idempotent
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.bots import BotPublic
from botfleet.manager.schemas.list_page import Page
from botfleet.manager.schemas.operations import (
    BotEditBody,
    BotEditPublic,
    BulkActionCreate,
    OperationPublic,
    OperationResultPublic,
)
from botfleet.manager.services import bot_edits, operations

router = APIRouter(responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))

OperationId = Annotated[str, Path(max_length=64)]
BotId = Annotated[str, Path(max_length=64)]

BULK_DESCRIPTION = """One action on every bot of yours the selector matches: `stop`,
`reconfigure` (`config` merged into each bot's config, as `PATCH /bots/{id}/config`), `command`
(`command: {action, payload}`, as `POST /bots/{id}/commands`), `relaunch` or `delete` (ended
bots). Answers 202 with the operation; follow it with `GET /operations/{id}` and its results.

The selector's parts must all match (`ids` AND `labels` AND `status`); the set is fixed when the
operation is created. Nothing given is refused (422 `empty_selector`); a selector matching
nothing is an operation `done` with `total` 0; more than 10,000 bots is 422
`selector_too_large`. An id in `ids` that is not one of your bots (unknown, or another
user's) is a failed result `bot_not_found`; one of yours that fails `labels` or `status` is
not selected. Each bot is acted on with the single-bot route's rules: a refusal (409
`illegal_transition`, 409 `bot_live`, 422 `invalid_config`, 429 `concurrency_limit`…) is that
bot's failed result, not the operation's failure. `Idempotency-Key` replays the first
answer (the same operation)."""


@router.post(
    "/bots/actions",
    tags=["operations"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OperationPublic,
    summary="Act on many bots at once",
    description=BULK_DESCRIPTION,
)
def start_bulk_action(
    body: BulkActionCreate, user: CurrentUser, session: SessionDep, once: Idempotent
) -> JSONResponse:
    replay = once.replay("POST /bots/actions", body.model_dump(mode="json"))
    if replay is not None:
        return replay
    operation = operations.create_operation(session, user_id=user.id, body=body)
    return once.answer(OperationPublic.model_validate(operation), status.HTTP_202_ACCEPTED)


@router.get("/operations", tags=["operations"], response_model=Page[OperationPublic])
def list_operations(
    user: CurrentUser, session: SessionDep, page: PageQuery
) -> Page[OperationPublic]:
    """Your bulk operations, newest first, a page at a time."""
    rows, next_cursor = operations.list_operations(session, user_id=user.id, page=page)
    return Page(items=[OperationPublic.model_validate(o) for o in rows], next_cursor=next_cursor)


@router.get("/operations/{operation_id}", tags=["operations"], response_model=OperationPublic)
def get_operation(
    operation_id: OperationId, user: CurrentUser, session: SessionDep
) -> OperationPublic:
    """The operation's progress: `done` and `failed` of `total`; `status` `running` until
    every bot was acted on. Another user's operation answers 404 `operation_not_found`."""
    operation = operations.get_operation(session, operation_id, user_id=user.id)
    return OperationPublic.model_validate(operation)


@router.get(
    "/operations/{operation_id}/results",
    tags=["operations"],
    response_model=Page[OperationResultPublic],
)
def get_operation_results(
    operation_id: OperationId,
    user: CurrentUser,
    session: SessionDep,
    page: PageQuery,
    ok: Annotated[
        bool | None, Query(description="Only the successes (true) or the failures (false).")
    ] = None,
) -> Page[OperationResultPublic]:
    """The bots acted on so far, in the order they were: `{bot_id, ok, error?, result?}`. Bots
    not reached yet (or never, once cancelled) are not listed."""
    rows, next_cursor = operations.list_results(
        session, operation_id, user_id=user.id, ok=ok, page=page
    )
    items = [OperationResultPublic.model_validate(r) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.post(
    "/operations/{operation_id}/cancel", tags=["operations"], response_model=OperationPublic
)
def cancel_operation(
    operation_id: OperationId, user: CurrentUser, session: SessionDep
) -> OperationPublic:
    """Stop acting on the remaining bots: 200 with the operation, `cancelled` (the bots already
    acted on stay so). A finished operation is answered as it is."""
    operation = operations.cancel_operation(session, operation_id, user_id=user.id)
    return OperationPublic.model_validate(operation)


EDIT_DESCRIPTION = """Change a bot's `name`, `labels`, `start_at`, `max_duration_s`, `restart`
or `priority`: 200 with the bot. A JSON Merge Patch: a field left out stays; `null` clears it
(`restart`: no restarts, `priority`: 0); `labels` merges key by key, a `null` value removing
that label; `restart` replaces the fields it gives. Values are checked as POST /bots checks
them (422).

What the state allows (else 409 `not_editable`, with `field` and `status`): `name` and
`labels` always, an ended bot's too; `start_at` while the bot is `queued` or `requested` (its
launch has not begun; moved to now or earlier, or to null, a requested bot launches now);
`max_duration_s`, `restart` and `priority` while it is live. Each edit that changes something
is kept, with who made it (`GET /bots/{id}/edits`). The admin token may edit any user's bot."""


@router.patch(
    "/bots/{bot_id}",
    tags=["bots"],
    response_model=BotPublic,
    summary="Edit a bot",
    description=EDIT_DESCRIPTION,
)
def edit_bot(
    bot_id: BotId, body: BotEditBody, viewer: Viewer, session: SessionDep, state: AppStateDep
) -> BotPublic:
    bot = bot_edits.edit_bot(
        session, bot_id=bot_id, user_id=viewer.user_id, body=body, launcher=state.launcher
    )
    return BotPublic.model_validate(bot)


@router.get("/bots/{bot_id}/edits", tags=["bots"], response_model=Page[BotEditPublic])
def list_bot_edits(
    bot_id: BotId, viewer: Viewer, session: SessionDep, page: PageQuery
) -> Page[BotEditPublic]:
    """The bot's edits (`PATCH /bots/{id}`), newest first: who changed which fields, from what
    to what."""
    rows, next_cursor = bot_edits.list_edits(session, bot_id, user_id=viewer.user_id, page=page)
    return Page(items=[BotEditPublic.model_validate(e) for e in rows], next_cursor=next_cursor)
