"""The public bot API: start, list, read, reconfigure, stop, commands, logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status
from fastapi.responses import JSONResponse, PlainTextResponse

from manager.api.deps import CurrentUser, FleetDep, SessionDep
from manager.errors import NotImplementedByBackend, Unavailable, error_responses
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
from manager.services import attempts, idempotency
from manager.services import bots as bot_records
from manager.services import commands as command_records
from manager.services.fleet import Fleet
from orchestrators.base import CapabilityNotSupported, OrchestratorError, WorkloadNotFound

router = APIRouter(
    prefix="/bots",
    tags=["bots"],
    responses=error_responses(400, 401, 404, 409, 413, 422, 429, 501, 503),
)
BotId = Annotated[str, "bot id"]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The same key and body within 24 h return the first answer again.",
    ),
]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotPublic)
def start_bot(
    body: BotCreate, user: CurrentUser, fleet: FleetDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    return idempotency.respond_once(
        fleet.sessions,
        user_id=user.id,
        key=idempotency_key,
        fingerprint=idempotency.fingerprint("POST /bots", body.model_dump(mode="json")),
        status_code=status.HTTP_201_CREATED,
        run=lambda: BotPublic.model_validate(
            fleet.start_bot(user_id=user.id, data=body)
        ).model_dump(mode="json"),
    )


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
    bot_records.get_bot(session, bot_id, user_id=user.id)
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
        for t in bot_records.list_transitions(session, bot_id)
    ]


@router.get("/{bot_id}/attempts", response_model=list[AttemptPublic])
def get_attempts(bot_id: str, session: SessionDep, user: CurrentUser) -> list[AttemptPublic]:
    """Every launch of the bot, oldest first (restarts add one each)."""
    bot_records.get_bot(session, bot_id, user_id=user.id)
    return [AttemptPublic.model_validate(a) for a in attempts.list_attempts(session, bot_id)]


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
def patch_config(
    bot_id: str,
    body: ConfigPatch,
    user: CurrentUser,
    fleet: FleetDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return _reconfigure(
        fleet, bot_id=bot_id, user_id=user.id, config=body.config, merge=True, key=idempotency_key
    )


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
def replace_config(
    bot_id: str,
    body: ConfigReplace,
    user: CurrentUser,
    fleet: FleetDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return _reconfigure(
        fleet, bot_id=bot_id, user_id=user.id, config=body.config, merge=False, key=idempotency_key
    )


def _reconfigure(
    fleet: Fleet, *, bot_id: str, user_id: str, config: dict[str, Any], merge: bool, key: str | None
) -> JSONResponse:
    method = "PATCH" if merge else "PUT"
    return idempotency.respond_once(
        fleet.sessions,
        user_id=user_id,
        key=key,
        fingerprint=idempotency.fingerprint(f"{method} /bots/{bot_id}/config", config),
        status_code=status.HTTP_202_ACCEPTED,
        run=lambda: CommandPublic.model_validate(
            command_records.reconfigure(
                fleet, bot_id=bot_id, user_id=user_id, config=config, merge=merge
            )
        ).model_dump(mode="json"),
    )


@router.post("/{bot_id}/stop", status_code=status.HTTP_202_ACCEPTED, response_model=BotPublic)
def stop_bot(bot_id: str, user: CurrentUser, fleet: FleetDep) -> BotPublic:
    return BotPublic.model_validate(fleet.stop_bot(bot_id=bot_id, user_id=user.id))


@router.get("/{bot_id}/commands", response_model=list[CommandPublic])
def list_commands(bot_id: str, session: SessionDep, user: CurrentUser) -> list[CommandPublic]:
    bot_records.get_bot(session, bot_id, user_id=user.id)
    return [CommandPublic.model_validate(c) for c in command_records.list_commands(session, bot_id)]


@router.get("/{bot_id}/commands/{command_id}", response_model=CommandPublic)
def get_command(
    bot_id: str, command_id: str, session: SessionDep, user: CurrentUser
) -> CommandPublic:
    bot_records.get_bot(session, bot_id, user_id=user.id)
    return CommandPublic.model_validate(command_records.get_command(session, bot_id, command_id))


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
    bot = bot_records.get_bot(session, bot_id, user_id=user.id)
    if not bot.runtime_ref:
        return PlainTextResponse("")
    try:
        text = fleet.orchestrator.logs(bot.runtime_ref, bot_id=bot.id, tail=tail)
    except CapabilityNotSupported as exc:
        raise NotImplementedByBackend(exc.code, str(exc)) from exc
    except OrchestratorError as exc:
        # Removed (or being removed) after it ended: the lines kept before removal.
        session.expire_all()
        kept = bot_records.get_bot(session, bot_id, user_id=user.id).last_logs
        if kept is None and not isinstance(exc, WorkloadNotFound):
            raise Unavailable(exc.code, str(exc)) from exc
        text = "\n".join((kept or "").splitlines()[-tail:])
    return PlainTextResponse(text)
