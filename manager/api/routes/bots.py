"""The public bot API: start, list, read, reconfigure, stop, commands, logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import JSONResponse, PlainTextResponse

from manager.api.deps import CurrentUser, FleetDep, SessionDep
from manager.api.idempotency import Idempotent
from manager.errors import error_responses
from manager.schemas import (
    AttemptPublic,
    BotCreate,
    BotPage,
    BotPublic,
    CommandPublic,
    ConfigPatch,
    ConfigReplace,
    TransitionPublic,
)
from manager.services import attempts
from manager.services import bots as bot_records
from manager.services import commands as command_records
from manager.services.logs import bot_logs

router = APIRouter(
    prefix="/bots",
    tags=["bots"],
    responses=error_responses(400, 401, 404, 409, 413, 422, 429, 501, 503),
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotPublic)
def start_bot(
    body: BotCreate, user: CurrentUser, session: SessionDep, fleet: FleetDep, once: Idempotent
) -> JSONResponse:
    replay = once.replay("POST /bots", body.model_dump(mode="json"))
    if replay is not None:
        return replay
    bot = fleet.start_bot(session, user_id=user.id, data=body)
    return once.answer(BotPublic.model_validate(bot), status.HTTP_201_CREATED)


@router.get("", response_model=BotPage)
def list_bots(
    session: SessionDep,
    user: CurrentUser,
    status_: Annotated[list[str], Query(alias="status")] = [],  # noqa: B006
    label: Annotated[list[str], Query(description="key:value, repeatable")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> BotPage:
    statuses = [s for item in status_ for s in item.split(",") if s]
    rows, next_cursor = bot_records.list_bots(
        session,
        user_id=user.id,
        statuses=statuses,
        labels=bot_records.parse_label_filters(label),
        limit=limit,
        cursor=cursor,
    )
    return BotPage(items=[BotPublic.model_validate(b) for b in rows], next_cursor=next_cursor)


@router.get("/{bot_id}", response_model=BotPublic)
def get_bot(bot_id: str, session: SessionDep, user: CurrentUser) -> BotPublic:
    return BotPublic.model_validate(bot_records.get_bot(session, bot_id, user_id=user.id))


@router.get("/{bot_id}/transitions", response_model=list[TransitionPublic])
def get_transitions(bot_id: str, session: SessionDep, user: CurrentUser) -> list[TransitionPublic]:
    return [
        TransitionPublic(
            from_=t.from_status,
            to=t.to_status,
            reason=t.reason,
            source=t.source,
            detail=t.detail,
            attempt=t.attempt,
            at=t.at,
        )
        for t in bot_records.list_transitions(session, bot_id, user_id=user.id)
    ]


@router.get("/{bot_id}/attempts", response_model=list[AttemptPublic])
def get_attempts(bot_id: str, session: SessionDep, user: CurrentUser) -> list[AttemptPublic]:
    """Every launch of the bot, oldest first (restarts add one each)."""
    bot_records.get_bot(session, bot_id, user_id=user.id)
    return [AttemptPublic.model_validate(a) for a in attempts.list_attempts(session, bot_id)]


class ConfigChange:
    """What PATCH and PUT of a config share; they differ only in `merge`, and each method is
    its own idempotent operation."""

    def __init__(
        self, bot_id: str, user: CurrentUser, session: SessionDep, fleet: FleetDep, once: Idempotent
    ) -> None:
        self.bot_id, self.user_id = bot_id, user.id
        self.session, self.fleet, self.once = session, fleet, once

    def apply(self, config: dict[str, Any], *, merge: bool) -> JSONResponse:
        method = "PATCH" if merge else "PUT"
        replay = self.once.replay(f"{method} /bots/{self.bot_id}/config", config)
        if replay is not None:
            return replay
        command = self.fleet.reconfigure(
            self.session, bot_id=self.bot_id, user_id=self.user_id, config=config, merge=merge
        )
        return self.once.answer(CommandPublic.model_validate(command), status.HTTP_202_ACCEPTED)


ConfigChangeDep = Annotated[ConfigChange, Depends()]


@router.patch(
    "/{bot_id}/config",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPublic,
    summary="Merge into a bot's config",
    description=(
        "`config` is a JSON Merge Patch (RFC 7396) of the bot's latest config: objects merge key "
        "by key (nested objects too), `null` deletes a key, any other value (arrays included) "
        'replaces it. `{"lang": "en", "n": 3}` patched with `{"n": 4}` becomes '
        '`{"lang": "en", "n": 4}`.\n\n'
        "Answers 202 with the `reconfigure` command, which carries the full resulting config and "
        "the next `config_version` to the bot; the bot's own `config` changes once it "
        "acknowledges. The merge runs under the bot's row lock: concurrent patches all land. "
        "409 `illegal_transition` unless the bot is `starting` or `active`; 422 when the merged "
        "config is larger than 64 KiB. `Idempotency-Key` replays the first answer. "
        "`PUT /bots/{id}/config` replaces the whole config instead."
    ),
)
def patch_config(body: ConfigPatch, change: ConfigChangeDep) -> JSONResponse:
    return change.apply(body.config, merge=True)


@router.put(
    "/{bot_id}/config",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPublic,
    summary="Replace a bot's config",
    description=(
        "`config` becomes the bot's whole config: keys it does not name are gone. Answers 202 "
        "with the `reconfigure` command, which carries the config and the next `config_version` "
        "to the bot; the bot's own `config` changes once it acknowledges. 409 "
        "`illegal_transition` unless the bot is `starting` or `active`. `Idempotency-Key` "
        "replays the first answer. `PATCH /bots/{id}/config` merges instead."
    ),
)
def replace_config(body: ConfigReplace, change: ConfigChangeDep) -> JSONResponse:
    return change.apply(body.config, merge=False)


@router.post("/{bot_id}/stop", status_code=status.HTTP_202_ACCEPTED, response_model=BotPublic)
def stop_bot(bot_id: str, user: CurrentUser, session: SessionDep, fleet: FleetDep) -> BotPublic:
    return BotPublic.model_validate(fleet.stop_bot(session, bot_id=bot_id, user_id=user.id))


@router.get("/{bot_id}/commands", response_model=list[CommandPublic])
def list_commands(bot_id: str, session: SessionDep, user: CurrentUser) -> list[CommandPublic]:
    rows = command_records.list_commands(session, bot_id, user_id=user.id)
    return [CommandPublic.model_validate(c) for c in rows]


@router.get("/{bot_id}/commands/{command_id}", response_model=CommandPublic)
def get_command(
    bot_id: str, command_id: str, session: SessionDep, user: CurrentUser
) -> CommandPublic:
    command = command_records.get_command(session, bot_id, command_id, user_id=user.id)
    return CommandPublic.model_validate(command)


@router.get(
    "/{bot_id}/logs",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_logs(
    bot_id: str,
    session: SessionDep,
    user: CurrentUser,
    fleet: FleetDep,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> PlainTextResponse:
    text = bot_logs(session, bot_id, user_id=user.id, orchestrator=fleet.orchestrator, tail=tail)
    return PlainTextResponse(text)
