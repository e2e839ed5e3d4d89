"""Everything the CLI shows: tables for people, exact JSON for scripts, errors on stderr.

Text that comes from the API (names, labels, reasons, details, errors, configs, logs, results)
is data, never Rich markup and never terminal controls: a bot may report `[/oops]` as its detail,
or `\\x1b[2J` (clear the screen) as its name. It goes through `clean` (and `escape`, or a `Text`)
before it reaches a console; only the markup written here styles anything, and the consoles
themselves show any control character that a forgotten path lets through.

Rich is imported only when something is drawn with it (a table, colour, markup): a plain answer
(`bots stop ID`, any `--json`) needs none of it (issue 29: a simple command in under 0.3 s).
`console` and `err` are made on first use.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

#: What a terminal acts on instead of showing: C0 controls (ESC starts every escape sequence),
#: DEL, C1 controls (0x9b is a one-byte CSI to some terminals), the bidi marks, embeddings,
#: overrides and isolates that reorder what is shown, and the line/paragraph separators.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
#: The same, less the newline and tab a multi-line log keeps.
UNSAFE_IN_LOGS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)


def _shown(match: re.Match[str]) -> str:
    """C0 and DEL in caret notation (ESC is `^[`, as `cat -v` shows it); the rest `\\uXXXX`."""
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    return "^?" if code == 0x7F else f"\\u{code:04x}"


def clean(value: object, *, multiline: bool = False) -> str:
    """`value` as text a terminal only shows: every control character visible instead of acted
    on. `multiline` keeps newlines and tabs (a log); anywhere else a newline could forge a row."""
    text = value if isinstance(value, str) else str(value)
    return (UNSAFE_IN_LOGS if multiline else UNSAFE).sub(_shown, text)


def escape(value: object) -> str:
    """Data for a markup string: controls made visible (first: `^[` must be escaped too), then
    brackets escaped."""
    from rich.markup import escape as escape_markup

    return escape_markup(clean(value))


def plain(value: object) -> Text:
    """Data as a Text cell (no markup), controls made visible."""
    from rich.text import Text

    return Text(clean(value))


def json_safe(text: str) -> str:
    """JSON text with every control character outside `\\n`/`\\t` as a `\\uXXXX` escape: the
    same JSON value for a script, nothing a terminal acts on (json.dumps escapes C0 in strings
    but leaves C1 and bidi controls raw)."""
    return UNSAFE_IN_LOGS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def echo(value: object, *, multiline: bool = False) -> None:
    """A plain line on stdout (no Rich), controls made visible."""
    typer.echo(clean(value, multiline=multiline))


def new_console(*, stderr: bool = False) -> Console:
    from botfleet.cli.safe_console import SafeConsole

    return SafeConsole(stderr=stderr, highlight=False)


console: Console  # made on first use (__getattr__), as is `err` (on stderr)
err: Console


def __getattr__(name: str) -> Any:
    """`console` and `err`, made on first use: Rich is imported then, not with this module."""
    if name not in ("console", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = globals()[name] = new_console(stderr=name == "err")
    return made


def _stderr() -> Console:
    """`err` from within this module, where a bare name would not reach `__getattr__`."""
    return globals()["err"] if "err" in globals() else __getattr__("err")


# Exit codes a script can branch on; 1 means "the bot or command itself failed".
FAILED, INPUT, NOT_FOUND, CONFLICT, LIMIT, AUTH, SERVER = 1, 2, 3, 4, 5, 6, 7
STATUS_EXIT = {
    400: INPUT,
    413: INPUT,
    415: INPUT,
    422: INPUT,
    404: NOT_FOUND,
    409: CONFLICT,
    429: LIMIT,
    401: AUTH,
    403: AUTH,
}
STATUS_STYLE = {
    "queued": "blue",
    "requested": "cyan",
    "starting": "yellow",
    "active": "green",
    "stopping": "magenta",
    "completed": "dim",
    "failed": "bold red",
    "acked": "green",
    "pending": "yellow",
    "delivered": "yellow",
    "expired": "red",
}


def exit_code(http_status: int) -> int:
    return STATUS_EXIT.get(http_status, SERVER if http_status >= 500 else FAILED)


def fail(message: str, code: int) -> NoReturn:
    """`error: …` on stderr and a distinct exit code, so scripts need not parse text."""
    _stderr().print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def invalid(message: str) -> NoReturn:
    """Input the CLI refuses before asking the API: the API's own code for it, and exit 2."""
    fail(f"invalid_input: {message}", INPUT)


def print_json(data: Any) -> None:
    """One JSON document on stdout and nothing else (plain print: no wrapping or colour)."""
    typer.echo(json_safe(json.dumps(data, indent=2, ensure_ascii=False)))


def short(bot_id: str | None) -> str:
    """The id's last 8 characters: ids are UUIDv7, whose leading characters are a timestamp."""
    return (bot_id or "")[-8:]


def styled(status: str | None) -> str:
    """A status as markup, coloured when it is one we know; anything else escaped."""
    style = STATUS_STYLE.get(status or "")
    return f"[{style}]{status}[/]" if style else escape(str(status or ""))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(value: str | None, *, now: datetime | None = None) -> str:
    """`42s`, `5m`, `3h`, `2d`: enough to tell fresh bots from stale ones at a glance."""
    moment = parse_time(value)
    if moment is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(value: str | None) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def queue_note(bot: dict[str, Any]) -> str:
    """A queued bot's place (`#2 in the queue`), shown where others show their reason."""
    position = bot.get("queue_position")
    return f"#{position} in the queue" if bot.get("status") == "queued" and position else ""


def bots_table(bots: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "BOT", "STATUS", "REASON", "ATTEMPT", "AGE"):
        table.add_column(column, no_wrap=column in {"ID", "STATUS", "AGE"})
    for bot in bots:
        table.add_row(
            escape(short(bot["id"])),
            escape(bot.get("name") or ""),
            escape(bot.get("bot") or ""),
            styled(bot.get("status")),
            escape(queue_note(bot) or bot.get("status_reason") or ""),
            escape(bot.get("attempt", "")),
            age(bot.get("created_at")),
        )
    return table


TRANSITION_COLUMNS = ("AT", "FROM", "TO", "REASON", "SOURCE", "ATTEMPT")
DETAIL_MIN_WIDTH = 30  # below this, a detail (often an error message) is a tall thin ribbon


def transitions_table(rows: list[dict[str, Any]], *, width: int) -> Table:
    """The history, one row per transition; a long DETAIL wraps, never cut.

    When `width` leaves DETAIL fewer than DETAIL_MIN_WIDTH columns beside the others (80
    columns do), the date goes above the time, and SOURCE (and any attempt after the first)
    under REASON, so that a long detail still reads as text.
    """
    from rich.table import Table
    from rich.text import Text

    cells = [
        {
            "AT": clock(row.get("at")),
            "FROM": clean(row.get("from") or ""),
            "TO": clean(row.get("to") or ""),
            "REASON": clean(row.get("reason") or ""),
            "SOURCE": clean(row.get("source") or ""),
            "ATTEMPT": clean(row.get("attempt", "")),
        }
        for row in rows
    ]
    # Each column is as wide as its widest cell or header, plus one space either side.
    needed = sum(
        max([len(name), *(len(c[name]) for c in cells)]) + 2 for name in TRANSITION_COLUMNS
    )
    wide = needed + DETAIL_MIN_WIDTH + 2 <= width
    columns = list(TRANSITION_COLUMNS) if wide else ["AT", "FROM", "TO", "REASON"]
    table = Table(box=None, header_style="bold", title="transitions", title_justify="left")
    for column in columns:
        table.add_column(
            column,
            justify="right" if column == "ATTEMPT" else "left",
            # Narrower still, REASON shares the wrapping (the widest column wraps first).
            no_wrap=wide or column != "REASON",
            overflow="fold",
        )
    table.add_column("DETAIL", overflow="fold")
    for row, cell in zip(rows, cells, strict=True):
        if not wide:
            cell["AT"] = cell["AT"].replace(" ", "\n")
            under = [f"by {cell['SOURCE']}"] if cell["SOURCE"] else []
            if cell["ATTEMPT"] not in ("", "1"):
                under.append(f"attempt {cell['ATTEMPT']}")
            cell["REASON"] = "\n".join([cell["REASON"], *under])
        # Text, not markup: a detail is free text and may hold brackets.
        texts = [Text.from_markup(styled(cell[c])) if c == "TO" else Text(cell[c]) for c in columns]
        table.add_row(*texts, plain(row.get("detail") or ""))
    return table


def fields_table(record: dict[str, Any], names: list[str]) -> Table:
    from rich.table import Table

    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name in names:
        value = record.get(name)
        if value in (None, {}, ""):
            continue
        if name == "status":
            table.add_row(name, styled(value))
            continue
        if name == "labels" and isinstance(value, dict):
            value = "  ".join(f"{key}:{text}" for key, text in value.items())  # as --label takes
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        elif name.endswith("_at"):
            value = clock(value)
        table.add_row(name, plain(value))
    return table


def users_table(users: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "MAX BOTS", "CREATED"):
        table.add_column(column)
    for user in users:
        table.add_row(
            plain(user["id"]),
            plain(user["name"]),
            str(user["max_concurrent_bots"]),
            clock(user["created_at"]),
        )
    return table


def keys_table(keys: list[dict[str, Any]]) -> Table:
    """A user's keys: never the key itself, its prefix to recognise it."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("ID", "PREFIX", "NAME", "SCOPES", "CREATED", "LAST USED", "EXPIRES"):
        table.add_column(column, no_wrap=column in {"ID", "PREFIX"})
    for key in keys:
        table.add_row(
            plain(key["id"]),
            plain(key["prefix"]),
            plain(key.get("name") or ""),
            plain(",".join(key.get("scopes") or [])),
            clock(key.get("created_at")),
            clock(key.get("last_used_at")) if key.get("last_used_at") else "never",
            clock(key.get("expires_at")) if key.get("expires_at") else "",
        )
    return table


def audit_table(rows: list[dict[str, Any]]) -> Table:
    """Admin actions, newest first, with what changed as compact JSON."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("AT", "ACTION", "TARGET", "CHANGE"):
        table.add_column(column, no_wrap=column != "CHANGE")
    for row in rows:
        table.add_row(
            clock(row.get("at")),
            plain(row["action"]),
            plain(row["target"]),
            plain(json.dumps(row.get("change") or {}, separators=(",", ":"))),
        )
    return table
