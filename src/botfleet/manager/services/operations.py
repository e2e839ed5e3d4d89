"""Bulk operations: one action on every bot a selector matched when the operation was created.

Creating one resolves the selector among the caller's own bots and stores the set (a result
row per bot, `ok` NULL: to do); the leader's worker (manager/background/operations.py) then
goes through them a batch at a time with `process_batch`. Each bot's action is the service
call its single-bot route makes (stop, merge into the config, a custom command, relaunch,
delete), in a savepoint of the batch's transaction with the operation's creator as the actor:
the same rules, audit and refusals. A refusal (409 illegal state, 422 invalid config, 429 over
the limit…) rolls back that bot's savepoint alone and becomes its failed result, with the code
and status the single-bot route would have answered; the operation goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from sqlalchemy import exists, insert, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid, NotFound
from botfleet.manager.core.models import Bot, BotLabel, utcnow
from botfleet.manager.core.operation_models import Operation, OperationResult
from botfleet.manager.core.statuses import IllegalTransition
from botfleet.manager.schemas.operations import BulkActionCreate, Selector
from botfleet.manager.services import audit, retention
from botfleet.manager.services.keyset import PageRequest, read_page

if TYPE_CHECKING:
    from botfleet.manager.services.bot_requests import BotRequests
    from botfleet.manager.services.launcher import Launcher

log = logging.getLogger(__name__)

#: Bots one operation may select: its results are written when it is created, in the request.
MAX_OPERATION_BOTS = 10_000

OPERATIONS_CREATED = Counter(
    "botfleet_operations_total", "Bulk operations created (POST /bots/actions)", ["action"]
)
OPERATIONS_FINISHED = Counter(
    "botfleet_operations_finished_total",
    "Bulk operations that finished: `done` (every bot acted on) or `cancelled`",
    ["action", "status"],
)
OPERATION_BOTS = Counter(
    "botfleet_operation_bots_total",
    "Bots a bulk operation acted on, by outcome (`ok`, `failed`)",
    ["action", "outcome"],
)
OPERATIONS_RUNNING = Gauge(
    "botfleet_operations_running", "Bulk operations still running, as of the worker's last tick"
)


# ---- creating one ---------------------------------------------------------------------------


def resolve_selector(
    session: Session, *, user_id: str, selector: Selector
) -> tuple[list[str], list[str]]:
    """The caller's bots the selector matches, oldest first, and the ids it names that are no
    bot of the caller (unknown or another user's: the same to the caller). A named id that is
    the caller's bot but fails the labels or status is simply not selected.

    422 `empty_selector` when nothing is given; 422 `selector_too_large` over
    MAX_OPERATION_BOTS bots."""
    if selector.is_empty():
        raise Invalid(
            ErrorCode.EMPTY_SELECTOR,
            "the selector names no ids, labels or status: name the bots to act on "
            '(`{"status": ["active"]}` for every active bot)',
        )
    query = select(Bot.id).where(Bot.user_id == user_id)
    wanted = list(dict.fromkeys(selector.ids or []))  # in order, each once
    if wanted:
        query = query.where(Bot.id.in_(wanted))
    if selector.status:
        query = query.where(Bot.status.in_([s.value for s in selector.status]))
    for key, value in (selector.labels or {}).items():
        query = query.where(
            select(BotLabel.bot_id)
            .where(BotLabel.bot_id == Bot.id, BotLabel.key == key, BotLabel.value == value)
            .exists()
        )
    found = list(session.scalars(query.order_by(Bot.id).limit(MAX_OPERATION_BOTS + 1)))
    if len(found) > MAX_OPERATION_BOTS:
        raise Invalid(
            ErrorCode.SELECTOR_TOO_LARGE,
            f"the selector matches more than {MAX_OPERATION_BOTS} bots: narrow it (labels, "
            "status) and run several operations",
        )
    missing: list[str] = []
    if wanted:
        own = set(session.scalars(select(Bot.id).where(Bot.user_id == user_id, Bot.id.in_(wanted))))
        missing = [bot_id for bot_id in wanted if bot_id not in own]
    return found, missing


def create_operation(session: Session, *, user_id: str, body: BulkActionCreate) -> Operation:
    """Record the operation and its selected bots (to do), in the caller's transaction; the
    worker starts on them once it is committed. Nothing selected: a `done` operation."""
    selected, missing = resolve_selector(session, user_id=user_id, selector=body.selector)
    now = utcnow()
    operation = Operation(
        user_id=user_id,
        action=body.action,
        status="running",
        selector=body.selector.model_dump(mode="json", exclude_none=True),
        config=body.config,
        command=body.command.model_dump(mode="json") if body.command else None,
        actor=audit.request_actor(session),
        total=len(selected) + len(missing),
        done=0,
        failed=len(missing),
        created_at=now,
    )
    if not selected:
        operation.status, operation.finished_at = "done", now
    session.add(operation)
    session.flush()
    not_found = {"code": ErrorCode.BOT_NOT_FOUND.value, "status": 404}
    rows: list[dict[str, Any]] = [
        {
            "operation_id": operation.id,
            "bot_id": bot_id,
            "ok": False,
            "error": {**not_found, "message": f"no bot {bot_id}"},
            "created_at": now,
            "finished_at": now,
        }
        for bot_id in missing
    ]
    rows += [{"operation_id": operation.id, "bot_id": b, "created_at": now} for b in selected]
    if rows:
        session.execute(insert(OperationResult), rows)
    OPERATIONS_CREATED.labels(body.action).inc()
    if operation.status == "done":
        OPERATIONS_FINISHED.labels(body.action, "done").inc()
    return operation


# ---- reading and cancelling -----------------------------------------------------------------


def get_operation(
    session: Session, operation_id: str, *, user_id: str, lock: bool = False
) -> Operation:
    """The caller's operation; another user's is not found (404 `operation_not_found`)."""
    query = select(Operation).where(Operation.id == operation_id, Operation.user_id == user_id)
    operation = session.scalar(query.with_for_update() if lock else query)
    if operation is None:
        raise NotFound(ErrorCode.OPERATION_NOT_FOUND, f"no operation {operation_id}")
    return operation


def list_operations(
    session: Session, *, user_id: str, page: PageRequest = PageRequest()
) -> tuple[list[Operation], str | None]:
    """The caller's operations, newest first."""
    query = select(Operation).where(Operation.user_id == user_id)
    return read_page(session, query, keys=[Operation.id], page=page, descending=True)


def list_results(
    session: Session,
    operation_id: str,
    *,
    user_id: str,
    ok: bool | None = None,
    page: PageRequest = PageRequest(),
) -> tuple[list[OperationResult], str | None]:
    """The bots acted on so far, in the order they were (`ok`: only the successes or only the
    failures); bots not reached yet, or never reached (cancelled), are not listed."""
    get_operation(session, operation_id, user_id=user_id)
    query = select(OperationResult).where(
        OperationResult.operation_id == operation_id, OperationResult.ok.is_not(None)
    )
    if ok is not None:
        query = query.where(OperationResult.ok.is_(ok))
    return read_page(session, query, keys=[OperationResult.id], page=page)


def cancel_operation(session: Session, operation_id: str, *, user_id: str) -> Operation:
    """Stop going through the remaining bots; those acted on stay so. Idempotent: a finished
    operation is answered as it is. Waits for a batch in progress (the row lock), so no bot is
    acted on after the answer."""
    operation = get_operation(session, operation_id, user_id=user_id, lock=True)
    if operation.status == "running":
        operation.status, operation.finished_at = "cancelled", utcnow()
        OPERATIONS_FINISHED.labels(operation.action, "cancelled").inc()
    return operation


# ---- the worker's part ----------------------------------------------------------------------


def process_batch(
    session: Session, operation_id: str, *, bots: BotRequests, launcher: Launcher, limit: int
) -> tuple[int, bool]:
    """Act on up to `limit` of the operation's remaining bots in the caller's transaction;
    returns (bots acted on, whether the operation is over). The operation's row is locked
    first: a cancel waits for the batch, and a batch finds a cancelled operation over."""
    operation = session.get(Operation, operation_id, with_for_update=True)
    if operation is None or operation.status != "running":
        return 0, True
    if operation.actor:  # the key that asked: every change below is attributed to it
        audit.set_request_actor(session, operation.actor)
    todo = list(
        session.scalars(
            select(OperationResult)
            .where(OperationResult.operation_id == operation_id, OperationResult.ok.is_(None))
            .order_by(OperationResult.id)
            .limit(limit)
        )
    )
    for row in todo:
        row.ok, row.result, row.error = _act_on_one(session, operation, row.bot_id, bots, launcher)
        row.finished_at = utcnow()
        if row.ok:
            operation.done += 1
        else:
            operation.failed += 1
        OPERATION_BOTS.labels(operation.action, "ok" if row.ok else "failed").inc()
    session.flush()
    left = session.scalar(
        select(
            exists().where(
                OperationResult.operation_id == operation_id, OperationResult.ok.is_(None)
            )
        )
    )
    if not left:
        operation.status, operation.finished_at = "done", utcnow()
        OPERATIONS_FINISHED.labels(operation.action, "done").inc()
    return len(todo), not left


def _act_on_one(
    session: Session, operation: Operation, bot_id: str, bots: BotRequests, launcher: Launcher
) -> tuple[bool, Any, dict[str, Any] | None]:
    """(ok, result, error) of the action on one bot, in a savepoint of its own."""
    try:
        with session.begin_nested():
            return True, apply_action(session, operation, bot_id, bots, launcher), None
    except BotfleetError as exc:
        return False, None, refusal(exc.code, exc.message, exc.status_code, exc.extra)
    except IllegalTransition as exc:
        extra = {"requested": exc.target}
        return False, None, refusal(ErrorCode.ILLEGAL_TRANSITION, str(exc), 409, extra)
    except (OperationalError, InterfaceError):
        raise  # the database itself: the batch rolls back and the next tick tries again
    except Exception as exc:  # one bot's unforeseen failure never wedges the operation
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise
        log.exception("operation %s: %s on bot %s failed", operation.id, operation.action, bot_id)
        return False, None, refusal(ErrorCode.HTTP_ERROR, type(exc).__name__, 500, {})


def refusal(code: str, message: str, status: int, extra: dict[str, Any]) -> dict[str, Any]:
    """A failed result's `error`: the single-bot route's `detail`, with its HTTP status."""
    return {**extra, "code": str(code), "message": message, "status": status}


def apply_action(
    session: Session, operation: Operation, bot_id: str, bots: BotRequests, launcher: Launcher
) -> Any:
    """The single-bot route's service call for this operation's action; its result."""
    user_id, action = operation.user_id, operation.action
    if action == "stop":
        bot = bots.stop_bot(session, bot_id=bot_id, user_id=user_id)
        return {"status": str(bot.status)}
    if action == "reconfigure":
        config = operation.config or {}
        command = bots.reconfigure(
            session, bot_id=bot_id, user_id=user_id, config=config, merge=True
        )
        return {"command_id": command.id, "config_version": command.config_version}
    if action == "command":
        asked = operation.command or {}
        command = bots.send_command(
            session,
            bot_id=bot_id,
            user_id=user_id,
            action=str(asked.get("action")),
            payload=dict(asked.get("payload") or {}),
        )
        return {"command_id": command.id}
    if action == "relaunch":
        return {"bot_id": bots.relaunch_bot(session, bot_id=bot_id, user_id=user_id).id}
    if action == "delete":
        retention.delete_bot_for_user(session, launcher, bot_id, user_id=user_id, purge_state=False)
        return None
    raise ValueError(f"unknown bulk action {action!r}")


def running_operations(session: Session, *, limit: int) -> list[tuple[str, str]]:
    """(id, user id) of the running operations, oldest first (`ix_operations_running`)."""
    rows = session.execute(
        select(Operation.id, Operation.user_id)
        .where(Operation.status == "running")
        .order_by(Operation.id)
        .limit(limit)
    )
    return [(row.id, row.user_id) for row in rows]
