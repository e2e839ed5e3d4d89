"""The public bot API: start, list, read, reconfigure, stop, commands, logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from manager.api.deps import CurrentUser, FleetDep, SessionDep, Viewer
from manager.api.idempotency import Idempotent
from manager.api.pages import PageQuery
from manager.errors import error_responses
from manager.schemas import (
    AttemptPublic,
    BotCreate,
    BotPage,
    BotPublic,
    CommandPublic,
    ConfigPatch,
    ConfigReplace,
    Page,
    TransitionPublic,
)
from manager.security import bearer_token
from manager.services import attempts, retention
from manager.services import bots as bot_records
from manager.services import commands as command_records
from manager.services import logs as bot_logs
from manager.services.unit_of_work import after_commit
from manager.streams import acquire_stream_slot, key_id_for_token
from orchestrators.log_tail import LogLimits

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
    page: PageQuery,
    status_: Annotated[list[str], Query(alias="status")] = [],  # noqa: B006
    label: Annotated[list[str], Query(description="key:value, repeatable")] = [],  # noqa: B006
) -> BotPage:
    statuses = [s for item in status_ for s in item.split(",") if s]
    rows, next_cursor = bot_records.list_bots(
        session,
        user_id=user.id,
        statuses=statuses,
        labels=bot_records.parse_label_filters(label),
        page=page,
    )
    return BotPage(items=[BotPublic.model_validate(b) for b in rows], next_cursor=next_cursor)


@router.get("/{bot_id}", response_model=BotPublic)
def get_bot(bot_id: str, session: SessionDep, user: CurrentUser) -> BotPublic:
    return BotPublic.model_validate(bot_records.get_bot(session, bot_id, user_id=user.id))


@router.get("/{bot_id}/transitions", response_model=Page[TransitionPublic])
def get_transitions(
    bot_id: str, session: SessionDep, user: CurrentUser, page: PageQuery
) -> Page[TransitionPublic]:
    """The bot's history, oldest first, a page at a time."""
    rows, next_cursor = bot_records.list_transitions(session, bot_id, user_id=user.id, page=page)
    items = [
        TransitionPublic(
            from_=t.from_status,
            to=t.to_status,
            reason=t.reason,
            source=t.source,
            detail=t.detail,
            attempt=t.attempt,
            at=t.at,
        )
        for t in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{bot_id}/attempts", response_model=Page[AttemptPublic])
def get_attempts(
    bot_id: str, session: SessionDep, user: CurrentUser, page: PageQuery
) -> Page[AttemptPublic]:
    """Every launch of the bot, oldest first (restarts add one each), a page at a time."""
    bot_records.get_bot(session, bot_id, user_id=user.id)
    rows, next_cursor = attempts.list_attempts(session, bot_id, page=page)
    return Page(items=[AttemptPublic.model_validate(a) for a in rows], next_cursor=next_cursor)


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


@router.delete("/{bot_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_bot(
    bot_id: str,
    session: SessionDep,
    viewer: Viewer,
    fleet: FleetDep,
    purge_state: Annotated[
        bool, Query(description="Also delete the bot's state (accepted; bots keep none yet).")
    ] = False,
) -> Response:
    """Delete an ended bot with its history (transitions, commands, attempts, webhook
    deliveries) and its log files: 204. 409 `bot_live` while it is live (stop it first), 404
    for an unknown or another user's bot; the admin token may delete any user's bot.
    `purge_state=1` is accepted and changes nothing yet: state keys come in a later issue."""
    retention.delete_bot(session, bot_id, user_id=viewer.user_id)
    forget = retention.Forget.of(fleet)
    after_commit(session, lambda: forget([bot_id]))  # files and Redis only once the rows are gone
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{bot_id}/commands", response_model=Page[CommandPublic])
def list_commands(
    bot_id: str, session: SessionDep, user: CurrentUser, page: PageQuery
) -> Page[CommandPublic]:
    """The commands sent to the bot, newest first, a page at a time."""
    rows, next_cursor = command_records.list_commands(session, bot_id, user_id=user.id, page=page)
    return Page(items=[CommandPublic.model_validate(c) for c in rows], next_cursor=next_cursor)


@router.get("/{bot_id}/commands/{command_id}", response_model=CommandPublic)
def get_command(
    bot_id: str, command_id: str, session: SessionDep, user: CurrentUser
) -> CommandPublic:
    command = command_records.get_command(session, bot_id, command_id, user_id=user.id)
    return CommandPublic.model_validate(command)


LOGS_DESCRIPTION = """The bot's recent output as text/plain: its last `tail` lines, at most
`BOTFLEET_LOG_TAIL_MAX_BYTES` in all; a line longer than `BOTFLEET_LOG_LINE_MAX_BYTES` is cut and
ends with `… [truncated N bytes]`.

`follow=1`: the same lines, then the output as it is written, as a chunked text/plain stream
(`curl -N`, `botfleet bots logs ID -f`) until the bot's workload ends and its output is drained,
or the client goes away. Each API key holds at most `BOTFLEET_MAX_STREAMS_PER_KEY` streams at
once (429 `too_many_streams`). A bot with no workload answers its kept lines and ends."""


@router.get(
    "/{bot_id}/logs",
    description=LOGS_DESCRIPTION,
    # The answer is text (documented below); no response_class, so that the errors keep their
    # documented application/json (a response_class would re-label them text/plain).
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_logs(
    request: Request,
    bot_id: str,
    session: SessionDep,
    user: CurrentUser,
    fleet: FleetDep,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
    follow: Annotated[bool, Query(description="Stream new output as it is written.")] = False,
) -> Response:
    source = bot_logs.locate_logs(session, bot_id, user_id=user.id)
    session.close()  # the reads below are file or engine I/O: no connection held across them
    settings = request.app.state.settings
    limits = LogLimits(settings.log_tail_max_bytes, settings.log_line_max_bytes)
    orchestrator = fleet.orchestrator
    if not follow:
        text = bot_logs.read_logs(
            source, orchestrator=orchestrator, sessions=fleet.sessions, tail=tail, limits=limits
        )
        return PlainTextResponse(text)
    token = bearer_token(request.headers.get("authorization")) or ""
    slot = acquire_stream_slot(key_id_for_token(token), settings.max_streams_per_key)
    try:
        follower = bot_logs.open_follower(source, orchestrator=orchestrator, tail=tail)
        if follower is None or source.runtime_ref is None:
            kept = bot_logs.read_logs(
                source, orchestrator=orchestrator, sessions=fleet.sessions, tail=tail, limits=limits
            )
            body = _once(kept + "\n" if kept else "")
        else:
            body = bot_logs.follow(
                follower,
                orchestrator=orchestrator,
                runtime_ref=source.runtime_ref,
                limits=limits,
                is_disconnected=request.is_disconnected,
            )
    except BaseException:
        slot.release()
        raise
    return StreamingResponse(
        slot.hold(body),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _once(text: str) -> AsyncIterator[bytes]:
    if text:
        yield text.encode()
