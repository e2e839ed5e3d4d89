"""Callbacks from bot runtimes, authenticated by each bot's own token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from manager.api.deps import CallingBot, FleetDep
from manager.db import transaction
from manager.errors import error_responses
from manager.schemas import AckIn, CallbackIn, CallbackOut, CommandPublic
from manager.services import bots as bot_records
from manager.services import commands as command_records
from manager.services.callbacks import apply_callback

router = APIRouter(
    prefix="/internal/bots/{bot_id}",
    tags=["runtime callbacks"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)


@router.post("/callbacks", response_model=CallbackOut)
def callback(bot: CallingBot, body: CallbackIn, fleet: FleetDep) -> CallbackOut:
    with transaction(fleet.sessions) as session:
        locked = bot_records.lock_bot(session, bot.id)
        changed = apply_callback(session, locked, body)
        return CallbackOut(status=locked.status, changed=changed)


@router.get("/commands")
def pending_commands(
    bot: CallingBot,
    fleet: FleetDep,
    pending: Annotated[int, Query(ge=0, le=1)] = 1,
) -> list[dict[str, Any]]:
    """Commands not yet acknowledged, oldest first, as the same envelopes Redis carries."""
    with fleet.sessions() as session:
        rows = (
            command_records.pending_commands(session, bot.id)
            if pending
            else list(reversed(command_records.list_commands(session, bot.id)))
        )
        return [command_records.to_message(c).to_dict() for c in rows]


@router.post("/commands/{command_id}/ack", response_model=CommandPublic)
def ack_command(command_id: str, bot: CallingBot, body: AckIn, fleet: FleetDep) -> CommandPublic:
    with transaction(fleet.sessions) as session:
        locked = bot_records.lock_bot(session, bot.id)
        command = command_records.record_ack(
            session, locked, command_id, ok=body.ok, error=body.error
        )
        return CommandPublic.model_validate(command)
