"""`botfleet bots stop|rm`: one bot, several (`stop ID ID …`), or every bot with some labels
(`stop --label team:sales`).

One id behaves as it always did: its answer, or its error and exit code. Several, or a
selector: a line per bot (the error of one does not stop the others), a summary on stderr, and
a non-zero exit when any failed. A selector that matches more than one bot asks first at a
terminal, and elsewhere (a script) needs --yes: it may match more than its author thought.
More than `bulk.BULK_FROM` bots are one bulk operation (one call, then its progress; `--no-wait`
prints its id) instead of a call per bot; the lines and the summary read the same.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from botfleet.cli import output, targets
from botfleet.cli.api import ApiClient, ApiError
from botfleet.cli.commands.bots import bulk
from botfleet.cli.commands.bots.inputs import (
    BotIds,
    LabelSelector,
    WaitTimeout,
    Yes,
    parse_labels,
)
from botfleet.cli.commands.bots.waiting import TERMINAL, report_end, wait_for_bot
from botfleet.cli.session import connect
from botfleet.cli.targets import Unresolved

#: What a selector stops: bots not yet on their way out.
LIVE = ["queued", "requested", "starting", "active"]
#: What a selector deletes: the API refuses a live bot.
ENDED = sorted(TERMINAL)


class EndedBadly(Exception):
    """A bot that `stop --wait` saw end otherwise than completed."""

    def __init__(self, bot: dict[str, Any]) -> None:
        self.code, self.exit_code = "bot_failed", output.FAILED
        self.message = f"it ended {bot.get('status')}: {bot.get('status_reason') or ''}"
        super().__init__(f"{self.code}: {self.message}")


@dataclass
class Outcome:
    """One bot asked for: as typed (or its id, for a selector), and what became of it."""

    typed: str
    bot_id: str | None = None
    answer: dict[str, Any] | None = None
    error: ApiError | Unresolved | EndedBadly | None = None

    @property
    def exit_code(self) -> int:
        if isinstance(self.error, ApiError):
            return output.exit_code(self.error.status)
        return self.error.exit_code if self.error else 0


def stop(
    ctx: typer.Context,
    bot_ids: list[str] = BotIds,
    label: list[str] = LabelSelector,
    yes: bool = Yes,
    wait: bool = typer.Option(False, "--wait", help="Wait until they ended (exit 1 if failed)."),
    timeout: float = WaitTimeout,
    as_json: bool = typer.Option(
        False, "--json", help="Print the API's JSON (a list for several bots), nothing else."
    ),
    no_wait: bool = bulk.NoWait,
) -> None:
    """Ask bots to leave; idempotent on a stopping or ended bot. With --label: every
    queued, requested, starting or active bot with those labels."""
    labels = parse_labels(label)
    with connect(ctx) as client:
        asked = _choose(client, bot_ids, labels, LIVE, "stop", yes)
        if _in_bulk(asked):
            body = {"action": "stop", "selector": bulk.selector(_ids(asked), labels, LIVE)}
            operation = bulk.start(client, body, no_wait=no_wait)
            if operation is not None:
                ended = _wait_ended(client, _ids(asked), labels, timeout) if wait else {}
                _bulk_report(client, operation, asked, as_json, "stopped", ended=ended)
            return
        _act(asked, client.stop_bot)
        if not _several(bot_ids, labels):
            _stop_one(client, asked[0], wait=wait, timeout=timeout, as_json=as_json)
            return
        done = [o for o in asked if not o.error]
        if wait:
            deadline = time.monotonic() + timeout
            for outcome in done:
                left = max(0.0, deadline - time.monotonic())
                outcome.answer = wait_for_bot(client, str(outcome.bot_id), TERMINAL, left)
    for outcome in done:
        bot = outcome.answer or {}
        if not as_json:
            typer.echo(f"{bot['id']} {bot['status']}")
        if wait and bot.get("status") != "completed":
            outcome.error = EndedBadly(bot)
    if as_json:
        output.print_json([_as_json(o) for o in asked])
    _summary(asked, "stopped")


def _stop_one(
    client: ApiClient, outcome: Outcome, *, wait: bool, timeout: float, as_json: bool
) -> None:
    """One id, as `bots stop ID` always answered."""
    _fail_alone(outcome)
    bot = outcome.answer or {}
    if wait:
        bot = wait_for_bot(client, bot["id"], TERMINAL, timeout)
        report_end(bot, as_json, "completed")
    elif as_json:
        output.print_json(bot)
    else:
        typer.echo(f"{bot['id']} {bot['status']}")


def remove(
    ctx: typer.Context,
    bot_ids: list[str] = BotIds,
    label: list[str] = LabelSelector,
    yes: bool = Yes,
    purge_state: bool = typer.Option(
        False, "--purge-state", help="Also delete their state directory (their --state-key)."
    ),
    no_wait: bool = bulk.NoWait,
) -> None:
    """Delete ended bots with their history and logs (a live bot: stop it first, exit 4).
    With --label: every completed or failed bot with those labels."""
    labels = parse_labels(label)
    with connect(ctx) as client:
        asked = _choose(client, bot_ids, labels, ENDED, "delete", yes)
        if _in_bulk(asked) and not purge_state:  # a bulk delete keeps states: one call each
            body = {"action": "delete", "selector": bulk.selector(_ids(asked), labels, ENDED)}
            operation = bulk.start(client, body, no_wait=no_wait)
            if operation is not None:
                _bulk_report(client, operation, asked, False, "deleted")
            return
        _act(asked, lambda bot_id: client.delete_bot(bot_id, purge_state=purge_state))
    if not _several(bot_ids, labels):
        _fail_alone(asked[0])
    for outcome in asked:
        if not outcome.error:
            typer.echo(f"{outcome.bot_id} deleted")
    if _several(bot_ids, labels):
        _summary(asked, "deleted")


def _ids(asked: list[Outcome]) -> list[str]:
    return [o.bot_id for o in asked if o.bot_id and not o.error]


def _in_bulk(asked: list[Outcome]) -> bool:
    return len(_ids(asked)) > bulk.BULK_FROM


def _wait_ended(
    client: ApiClient, ids: list[str], labels: list[tuple[str, str]], timeout: float
) -> dict[str, str]:
    """Wait until none of these bots is live (one listing a poll, not one call a bot); then
    {id: "failed"} for those that failed (the others completed)."""
    wanted, deadline = set(ids), time.monotonic() + timeout
    while True:
        pages = client.iter_pages(status=[*LIVE, "stopping"], labels=labels, limit=1000)
        if not any(b["id"] in wanted for page in pages for b in page["items"]):
            break
        if time.monotonic() > deadline:
            output.fail(f"timed out after {timeout:g}s waiting for the bots to end", output.FAILED)
        time.sleep(0.5)
    pages = client.iter_pages(status=["failed"], labels=labels, limit=1000)
    return {b["id"]: "failed" for page in pages for b in page["items"] if b["id"] in wanted}


def _bulk_report(
    client: ApiClient,
    operation: dict[str, Any],
    asked: list[Outcome],
    as_json: bool,
    verb: str,
    *,
    ended: dict[str, str] | None = None,
    line: Callable[[dict[str, Any]], str] | None = None,
) -> None:
    """The operation's results as the per-bot calls' lines and summary (`line`: a result's
    line, when not a stop's or a delete's): the ids that named no bot, and (`ended`, after
    --wait) the bots that ended failed, count as failures too."""
    elsewhere = []
    for outcome in asked:
        if isinstance(outcome.error, Unresolved):
            error = outcome.error
            output.err.print(
                f"[red]error:[/] {output.escape(outcome.typed)}: {output.escape(error)}",
                soft_wrap=True,
            )
            targets.show_candidates(error)
            elsewhere.append((outcome.typed, error.code, error.message, error.exit_code))

    def stopped_or_deleted(result: dict[str, Any]) -> str:
        if verb == "deleted":
            return f"{result['bot_id']} deleted"
        if ended is not None:
            return f"{result['bot_id']} {ended.get(result['bot_id'], 'completed')}"
        return f"{result['bot_id']} {result['result']['status']}"

    bulk.report(
        client,
        operation,
        line=line or stopped_or_deleted,
        as_json=as_json,
        verb=verb,
        elsewhere=elsewhere,
        ended_badly=ended or {},
    )


def _several(bot_ids: list[str] | None, labels: list[tuple[str, str]]) -> bool:
    return bool(labels) or len(bot_ids or []) > 1


def _choose(
    client: ApiClient,
    bot_ids: list[str] | None,
    labels: list[tuple[str, str]],
    statuses: list[str],
    verb: str,
    yes: bool,
) -> list[Outcome]:
    """The bots asked for: each id resolved (one that names no single bot is that bot's
    failure), or every bot the selector matches, once the user agreed."""
    if bool(bot_ids) == bool(labels):
        output.invalid("give bot ids, or --label key:value (not both)")
    if not labels:
        asked: dict[str, Outcome] = {}
        for typed in bot_ids or []:
            try:
                bot_id = targets.resolve(client, typed)
            except Unresolved as exc:
                asked[f"?{typed}"] = Outcome(typed, error=exc)
                continue
            asked.setdefault(bot_id, Outcome(typed, bot_id))  # one bot named twice: once
        return list(asked.values())
    bots = targets.select(client, labels, statuses)
    selector = " ".join(f"{k}:{v}" for k, v in labels)
    if not bots:
        output.err.print(
            f"no {' or '.join(statuses)} bot has {output.escape(selector)}: nothing to {verb}",
            soft_wrap=True,
        )
    elif len(bots) > 1 and not yes:
        _confirm(bots, verb, selector)
    return [Outcome(bot["id"], bot["id"]) for bot in bots]


def _confirm(bots: list[dict[str, Any]], verb: str, selector: str) -> None:
    output.err.print(output.bots_table(bots))
    if not sys.stdin.isatty():
        output.fail(f"{len(bots)} bots have {selector}: add --yes to {verb} them all", output.INPUT)
    if not typer.confirm(f"{verb.capitalize()} these {len(bots)} bots?", err=True):
        output.fail(f"not confirmed: no bot asked to {verb}", output.FAILED)


def _act(asked: list[Outcome], action: Callable[[str], Any]) -> None:
    """`action` on each bot; the API's refusal of one is that one's failure."""
    for outcome in asked:
        if outcome.error or outcome.bot_id is None:
            continue
        try:
            outcome.answer = action(outcome.bot_id)
        except ApiError as exc:
            outcome.error = exc


def _fail_alone(outcome: Outcome) -> None:
    """One bot's failure, as a command about one bot reports it."""
    if isinstance(outcome.error, Unresolved):
        targets.fail(outcome.error)
    if isinstance(outcome.error, ApiError):
        output.fail(f"{outcome.error.code}: {outcome.error.message}", outcome.exit_code)


def _as_json(outcome: Outcome) -> dict[str, Any]:
    """The API's answer for the bot; a failure adds `error` ({code, message})."""
    shown = outcome.answer or {"id": outcome.bot_id or outcome.typed}
    if outcome.error is None:
        return shown
    return {**shown, "error": {"code": outcome.error.code, "message": outcome.error.message}}


def _summary(asked: list[Outcome], done: str) -> None:
    """Each failure, a count, and the exit: a failure's code when they all agree, else 1."""
    failed = [o for o in asked if o.error]
    for outcome in failed:
        output.err.print(
            f"[red]error:[/] {output.escape(outcome.typed)}: {output.escape(outcome.error)}",
            soft_wrap=True,
        )
        if isinstance(outcome.error, Unresolved):
            targets.show_candidates(outcome.error)
    if not asked:
        return
    word = "bot" if len(asked) == 1 else "bots"
    tally = f", {len(failed)} failed" if failed else ""
    output.err.print(f"{done} {len(asked) - len(failed)} of {len(asked)} {word}{tally}")
    if failed:
        codes = {o.exit_code for o in failed}
        raise typer.Exit(codes.pop() if len(codes) == 1 else output.FAILED)
