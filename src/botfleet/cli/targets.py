"""Which bots a command acts on: an id as the user typed it (the whole id, the short id the CLI
shows, or a prefix), or every bot with some labels.

A piece of an id is looked up with `GET /bots?id=<piece>`, which lists the caller's bots whose
id starts or ends with it: exactly one is that bot; none and several are errors, the second
listing the candidates so that the user can type one of their short ids instead.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

import typer

from botfleet.cli import output
from botfleet.cli.api import MAX_PAGE, ApiClient

#: A whole id (a UUID): used as it is, with no lookup.
WHOLE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: What `GET /bots?id=` takes: 4 to 36 hex digits and dashes.
ID_PIECE = re.compile(r"[0-9a-f-]{4,36}", re.I)
#: How many candidates an ambiguous piece lists.
CANDIDATES_SHOWN = 10


class Unresolved(Exception):
    """A typed id that names no bot, or several: the API's kind of `code: message`, the exit
    code a script branches on, and the bots it could mean."""

    def __init__(
        self,
        code: str,
        message: str,
        exit_code: int,
        candidates: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.exit_code = code, message, exit_code
        self.candidates = candidates or []


def resolve(client: ApiClient, typed: str) -> str:
    """The whole id of the one bot `typed` names (raises `Unresolved`). Text that is no piece
    of an id at all goes to the API as it is, which says what it makes of it."""
    return find(client, typed)[0]


def find(client: ApiClient, typed: str) -> tuple[str, dict[str, Any] | None]:
    """`resolve`, and the bot itself where looking up a piece of its id listed it (the same
    record as `GET /bots/{id}`, one request fewer); None for a whole id."""
    text = typed.strip()
    if WHOLE_ID.fullmatch(text):
        return text.lower(), None
    if not ID_PIECE.fullmatch(text):
        return typed, None
    piece = text.lower()
    page = client.list_bots(id_part=piece, limit=CANDIDATES_SHOWN + 1)
    # A manager that ignores `id` answers every bot: keep only the matches.
    found = [b for b in page["items"] if b["id"].startswith(piece) or b["id"].endswith(piece)]
    if len(found) == 1:
        return str(found[0]["id"]), found[0]
    if not found:
        raise Unresolved(
            "bot_not_found",
            f"no bot of yours has an id that starts or ends with {text!r}",
            output.NOT_FOUND,
        )
    count = f"more than {CANDIDATES_SHOWN}" if len(found) > CANDIDATES_SHOWN else str(len(found))
    raise Unresolved(
        "ambiguous_id",
        f"{text!r} matches {count} bots; give one of their short ids, or more of the id",
        output.INPUT,
        found[:CANDIDATES_SHOWN],
    )


def resolve_or_fail(client: ApiClient, typed: str) -> str:
    """`resolve` for a command about one bot: a typed id that names no one bot ends it."""
    return find_or_fail(client, typed)[0]


def find_or_fail(client: ApiClient, typed: str) -> tuple[str, dict[str, Any] | None]:
    """`find` for a command about one bot: a typed id that names no one bot ends it."""
    try:
        return find(client, typed)
    except Unresolved as exc:
        fail(exc)


def fail(exc: Unresolved) -> NoReturn:
    """`error: code: message`, then the candidates (short id, status, name), and the exit."""
    output.err.print(f"[red]error:[/] {output.escape(str(exc))}", soft_wrap=True)
    show_candidates(exc)
    raise typer.Exit(exc.exit_code)


def show_candidates(exc: Unresolved) -> None:
    for bot in exc.candidates:
        output.err.print(
            f"  {output.escape(output.short(bot['id']))}  {output.styled(bot.get('status'))}"
            f"  {output.escape(bot.get('name') or '')}",
            soft_wrap=True,
        )


def select(
    client: ApiClient, labels: list[tuple[str, str]], statuses: list[str]
) -> list[dict[str, Any]]:
    """Every bot of the caller with all these labels and one of these statuses, every page."""
    pages = client.iter_pages(status=statuses, labels=labels, limit=MAX_PAGE)
    return [bot for page in pages for bot in page["items"]]
