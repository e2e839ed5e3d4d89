"""Callbacks from bot runtimes, authenticated by each bot's own token."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from botfleet.manager.background.exit_watch import ExitWatch
from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import (
    AppStateDep,
    BotCredentials,
    BotPath,
    CallingBot,
    LockedCallingBot,
    SessionDep,
    bot_token,
)
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.api import AckIn, CallbackIn, CallbackOut, CommandPublic, Page
from botfleet.manager.services import auth
from botfleet.manager.services import commands as command_records
from botfleet.manager.services.callbacks import apply_callback, awaited_exit
from botfleet.manager.services.unit_of_work import after_commit, unit_of_work

router = APIRouter(
    prefix="/internal/bots/{bot_id}",
    tags=["runtime callbacks"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)

# A callback that changes the bot authenticates and locks its row in one statement, in one
# transaction. A heartbeat changes nothing but liveness: it is authenticated from memory and
# coalesced (`manager/hot_path/heartbeats.py`), without a transaction or a worker thread. A
# report changes no status either: authenticated the same way, coalesced per bot
# (`manager/hot_path/reports.py`).


@router.post("/callbacks", response_model=CallbackOut)
async def callback(
    state: AppStateDep, bot_id: BotPath, body: CallbackIn, credentials: BotCredentials
) -> CallbackOut:
    token = bot_token(credentials)
    if body.event == "heartbeat":
        status = await state.heartbeats.accept(token=token, bot_id=bot_id)
        return CallbackOut(status=status, changed=False)
    if body.event == "report" and body.data is not None:
        status = await state.reports.accept(token=token, bot_id=bot_id, data=body.data)
        return CallbackOut(status=status, changed=False)
    return await run_in_threadpool(_apply, state.sessions, token, bot_id, body, state.exit_watch)


def _apply(
    sessions: sessionmaker[Session], token: str, bot_id: str, body: CallbackIn, exits: ExitWatch
) -> CallbackOut:
    """An `exited` is kept and the bot ends once its workload is gone: the watcher is told
    once the report is committed (`background/exit_watch.py`)."""
    with unit_of_work(sessions) as session:
        bot = auth.bot_for_token(session, token=token, bot_id=bot_id, lock=True)
        changed = apply_callback(session, bot, body)
        awaited = awaited_exit(bot, body)
        if awaited is not None:
            after_commit(session, partial(exits.watch, awaited))
        return CallbackOut(status=bot.status, changed=changed)


@router.get("/commands", response_model=Page[dict[str, Any]])
def pending_commands(
    bot: CallingBot,
    session: SessionDep,
    page: PageQuery,
    pending: Annotated[int, Query(ge=0, le=1)] = 1,
) -> Page[dict[str, Any]]:
    """Commands not yet acknowledged (`pending=0`: every command), oldest first, as the same
    envelopes Redis carries, a page at a time: the runtime follows `next_cursor`."""
    messages, next_cursor = command_records.for_runtime(
        session, bot.id, pending_only=bool(pending), page=page
    )
    return Page(items=[m.to_dict() for m in messages], next_cursor=next_cursor)


@router.post("/commands/{command_id}/ack", response_model=CommandPublic)
def ack_command(
    command_id: str, bot: LockedCallingBot, body: AckIn, session: SessionDep
) -> CommandPublic:
    command = command_records.record_ack(
        session, bot, command_id, ok=body.ok, error=body.error, result=body.result
    )
    return CommandPublic.model_validate(command)


@router.get("/secrets", response_model=dict[str, str])
def read_secrets(bot: CallingBot, state: AppStateDep) -> dict[str, str]:
    """The calling bot's current secrets (after a `secrets` command; `PUT /bots/{id}/secrets`),
    to its own token only: they never travel over Redis."""
    box = state.box
    return box.open(bot.secrets_sealed) if bot.secrets_sealed else {}
