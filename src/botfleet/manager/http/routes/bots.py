"""The public bot API: start, list, read, reconfigure, stop, commands, logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from botfleet.manager.core.errors import error_responses
from botfleet.manager.core.secrets import bearer_token
from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.http.deps import (
    AppStateDep,
    BotRequestsDep,
    CurrentUser,
    SessionDep,
    Viewer,
)
from botfleet.manager.http.idempotency import Idempotent
from botfleet.manager.http.log_follow import followed_logs, log_limits
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.api import (
    AttemptPublic,
    BotCreate,
    BotPage,
    BotPublic,
    CommandCreate,
    CommandPublic,
    ConfigPatch,
    ConfigReplace,
    Page,
    SecretsReplace,
    TransitionPublic,
)
from botfleet.manager.services import attempts, queue, retention
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services import commands as command_records
from botfleet.manager.services import logs as bot_logs
from botfleet.manager.services.bot_listing import DEFAULT_SORT

router = APIRouter(
    prefix="/bots",
    tags=["bots"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 501, 503),
)

#: The `status` filter's values, in words: it takes them comma-separated, so it is no enum.
STATUS_FILTER = "Repeatable, or comma-separated: " + ", ".join(BotStatus) + "."
SORT_DESCRIPTION = "`-created` (newest first), `created`, `name`, `status`, `heartbeat`; `-`: "
SORT_DESCRIPTION += "descending. Each is a keyset page (its cursor is for that order only)."


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BotPublic)
def start_bot(
    body: BotCreate, user: CurrentUser, session: SessionDep, bots: BotRequestsDep, once: Idempotent
) -> JSONResponse:
    replay = once.replay("POST /bots", body.model_dump(mode="json"))
    if replay is not None:
        return replay
    bot = bots.start_bot(session, user_id=user.id, data=body)
    return once.answer(queue.shown(session, [bot])[0], status.HTTP_201_CREATED)


@router.get(
    "",
    response_model=BotPage,
    summary="List bots",
    description="The caller's bots, newest first, a page at a time. With the admin token: every "
    "user's bots (the admin fleet view), `user_id` keeping one user's; a user's key always "
    "lists its own bots only.",
)
def list_bots(
    session: SessionDep,
    viewer: Viewer,
    page: PageQuery,
    status_: Annotated[list[str], Query(alias="status", description=STATUS_FILTER)] = [],  # noqa: B006
    label: Annotated[list[str], Query(description="key:value, repeatable")] = [],  # noqa: B006
    user_id: Annotated[
        str | None, Query(max_length=36, description="Admin token only: this user's bots.")
    ] = None,
    id_: Annotated[
        str | None,
        Query(
            alias="id",
            max_length=36,
            description="The bots whose id starts or ends with this (4 or more hex digits): a "
            "prefix, or the short id the CLI and the dashboard show (the last 8).",
        ),
    ] = None,
    name: Annotated[
        str | None, Query(max_length=200, description="Names starting with this, in any case.")
    ] = None,
    sort: Annotated[str, Query(max_length=16, description=SORT_DESCRIPTION)] = DEFAULT_SORT,
) -> BotPage:
    statuses = [s for item in status_ for s in item.split(",") if s]
    rows, next_cursor = bot_records.list_bots(
        session,
        user_id=user_id if viewer.is_admin else viewer.user_id,
        statuses=statuses,
        labels=bot_records.parse_label_filters(label),
        id_part=id_,
        page=page,
        name_prefix=name,
        sort=sort,
    )
    return BotPage(items=queue.shown(session, rows), next_cursor=next_cursor)


@router.get("/{bot_id}", response_model=BotPublic)
def get_bot(bot_id: str, session: SessionDep, viewer: Viewer) -> BotPublic:
    """The bot (any user's with the admin token)."""
    return queue.shown(session, [bot_records.get_bot(session, bot_id, user_id=viewer.user_id)])[0]


@router.get("/{bot_id}/transitions", response_model=Page[TransitionPublic])
def get_transitions(
    bot_id: str, session: SessionDep, viewer: Viewer, page: PageQuery
) -> Page[TransitionPublic]:
    """The bot's history, oldest first, a page at a time; `actor` says who caused each move."""
    rows, next_cursor = bot_records.list_transitions(
        session, bot_id, user_id=viewer.user_id, page=page
    )
    items = [
        TransitionPublic(
            from_=t.from_status,
            to=t.to_status,
            reason=t.reason,
            source=t.source,
            actor=t.actor,
            detail=t.detail,
            attempt=t.attempt,
            at=t.at,
        )
        for t in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{bot_id}/attempts", response_model=Page[AttemptPublic])
def get_attempts(
    bot_id: str, session: SessionDep, viewer: Viewer, page: PageQuery
) -> Page[AttemptPublic]:
    """Every launch of the bot, oldest first (restarts add one each), a page at a time."""
    bot_records.get_bot(session, bot_id, user_id=viewer.user_id)
    rows, next_cursor = attempts.list_attempts(session, bot_id, page=page)
    return Page(items=[AttemptPublic.model_validate(a) for a in rows], next_cursor=next_cursor)


class ConfigChange:
    """What PATCH and PUT of a config share; they differ only in `merge`, and each method is
    its own idempotent operation."""

    def __init__(
        self,
        bot_id: str,
        user: CurrentUser,
        session: SessionDep,
        bots: BotRequestsDep,
        once: Idempotent,
    ) -> None:
        self.bot_id, self.user_id = bot_id, user.id
        self.session, self.bots, self.once = session, bots, once

    def apply(self, config: dict[str, Any], *, merge: bool) -> JSONResponse:
        method = "PATCH" if merge else "PUT"
        replay = self.once.replay(f"{method} /bots/{self.bot_id}/config", config)
        if replay is not None:
            return replay
        command = self.bots.reconfigure(
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


@router.post(
    "/{bot_id}/stop",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BotPublic,
    summary="Stop a bot",
    description="Ask the bot to leave: 202, idempotent on a stopping or ended bot. The admin "
    "token may stop any user's bot (recorded with actor `admin`).",
)
def stop_bot(bot_id: str, viewer: Viewer, session: SessionDep, bots: BotRequestsDep) -> BotPublic:
    bot = bots.stop_bot(session, bot_id=bot_id, user_id=viewer.user_id)
    return BotPublic.model_validate(bot)


@router.post(
    "/{bot_id}/relaunch",
    status_code=status.HTTP_201_CREATED,
    response_model=BotPublic,
    summary="Start an ended bot again, as a new bot",
    description=(
        "Creates a new bot (new id, `relaunch_of`: this bot's id) with this bot's kind, image, "
        "name, platform, native id, latest config, secrets (copied sealed), labels, restart "
        "policy, max duration, dedup and state keys, and its webhook override: 201 with the new "
        "bot. 409 `bot_live` while this bot is live (stop it first); the user's limit (429 "
        "`concurrency_limit`), `dedup_key` (409 `duplicate_bot`) and `state_key` (409 "
        "`state_in_use`) apply as for POST /bots; `Idempotency-Key` replays the first answer. "
        "404 for an unknown or another user's bot."
    ),
)
def relaunch_bot(
    bot_id: str, user: CurrentUser, session: SessionDep, bots: BotRequestsDep, once: Idempotent
) -> JSONResponse:
    replay = once.replay(f"POST /bots/{bot_id}/relaunch", {})
    if replay is not None:
        return replay
    bot = bots.relaunch_bot(session, bot_id=bot_id, user_id=user.id)
    return once.answer(queue.shown(session, [bot])[0], status.HTTP_201_CREATED)


@router.delete("/{bot_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_bot(
    bot_id: str,
    session: SessionDep,
    viewer: Viewer,
    state: AppStateDep,
    purge_state: Annotated[
        bool, Query(description="Also delete the bot's state directory (its `state_key`).")
    ] = False,
) -> Response:
    """Delete an ended bot with its history (transitions, commands, attempts, webhook
    deliveries) and its log files: 204. 409 `bot_live` while it is live (stop it first), 404
    for an unknown or another user's bot; the admin token may delete any user's bot.
    The bot's state directory is kept (a later bot with the same `state_key` finds it) unless
    `purge_state=1`: then it is deleted first, and 409 `state_in_use` while another live bot
    holds the key; 503 `state_purge_failed` when the engine could not delete it (nothing is
    deleted then); 501 on a backend that cannot delete states (Nomad)."""
    retention.delete_bot_for_user(
        session, state.launcher, bot_id, user_id=viewer.user_id, purge_state=purge_state
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{bot_id}/commands", response_model=Page[CommandPublic])
def list_commands(
    bot_id: str, session: SessionDep, viewer: Viewer, page: PageQuery
) -> Page[CommandPublic]:
    """The commands sent to the bot, newest first, a page at a time."""
    rows, next_cursor = command_records.list_commands(
        session, bot_id, user_id=viewer.user_id, page=page
    )
    return Page(items=[CommandPublic.model_validate(c) for c in rows], next_cursor=next_cursor)


@router.get("/{bot_id}/commands/{command_id}", response_model=CommandPublic)
def get_command(bot_id: str, command_id: str, session: SessionDep, viewer: Viewer) -> CommandPublic:
    command = command_records.get_command(session, bot_id, command_id, user_id=viewer.user_id)
    return CommandPublic.model_validate(command)


@router.post(
    "/{bot_id}/commands",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPublic,
    summary="Send a bot a custom command",
    description=(
        "`action` (snake_case; not `reconfigure`, `leave` or `secrets`, which have their own "
        "routes) and `payload` (a JSON object, at most 64 KiB) go to the bot's "
        "`on_command(action, payload)`. Answers 202 with the command; it is stored, published, "
        "acknowledged and re-published like a reconfigure. Follow it with "
        "`GET /bots/{id}/commands/{cid}`: `acked` with the bot's JSON answer as `result` "
        "(at most 64 KiB, else `failed` with `result_too_large`), or `failed` with the bot's "
        "error message, or `unknown_action` when the bot has no such command. 409 "
        "`illegal_transition` unless the bot is `starting` or `active`; 422 for a bad action or "
        "payload; 429 `rate_limited` over the per-bot command budget. `Idempotency-Key` replays "
        "the first answer."
    ),
)
def send_command(
    bot_id: str,
    body: CommandCreate,
    user: CurrentUser,
    session: SessionDep,
    bots: BotRequestsDep,
    once: Idempotent,
) -> JSONResponse:
    replay = once.replay(f"POST /bots/{bot_id}/commands", body.model_dump(mode="json"))
    if replay is not None:
        return replay
    command = bots.send_command(
        session, bot_id=bot_id, user_id=user.id, action=body.action, payload=body.payload
    )
    return once.answer(CommandPublic.model_validate(command), status.HTTP_202_ACCEPTED)


@router.put(
    "/{bot_id}/secrets",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPublic,
    summary="Replace a live bot's secrets",
    description=(
        "The body is the bot's whole new set of secrets, an object of strings (at most 64 "
        'names and 64 KiB; `{"secrets": {...}}` is accepted too). They are sealed at rest and '
        "never shown again. Answers 202 with the `secrets` command: it carries no secret (not "
        "over Redis, not in the command list, not in events); the bot's runtime fetches them "
        "from the manager with its own token and hands them to the bot's `on_secrets`. Later "
        "restarts and relaunches start with them. 409 `illegal_transition` unless the bot is "
        "`starting` or `active`."
    ),
)
def replace_secrets(
    bot_id: str, body: SecretsReplace, user: CurrentUser, session: SessionDep, bots: BotRequestsDep
) -> CommandPublic:
    command = bots.replace_secrets(session, bot_id=bot_id, user_id=user.id, secrets=body.root)
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
    viewer: Viewer,
    state: AppStateDep,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
    follow: Annotated[bool, Query(description="Stream new output as it is written.")] = False,
) -> Response:
    source = bot_logs.locate_logs(session, bot_id, user_id=viewer.user_id)
    session.close()  # the reads below are file or engine I/O: no connection held across them
    if follow:
        token = bearer_token(request.headers.get("authorization")) or ""
        return followed_logs(request, source, state=state, tail=tail, credential=token)
    text = bot_logs.read_logs(
        source,
        orchestrator=state.orchestrator,
        sessions=state.sessions,
        tail=tail,
        limits=log_limits(state.settings),
    )
    return PlainTextResponse(text)
