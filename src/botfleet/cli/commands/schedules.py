"""`botfleet schedules …`: bots started on a cron expression in a time zone, each from a
template (a POST /bots body), optionally stopped after a duration or at a window's end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from botfleet.cli import help_format, output
from botfleet.cli.api import MAX_PAGE, ApiClient
from botfleet.cli.session import connect
from botfleet.cli.targets import WHOLE_ID

app = help_format.Typer(
    help="Schedules: start bots on a cron expression in a time zone; pause, resume, remove.",
    no_args_is_help=True,
)
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON document, nothing else.")
ScheduleArg = typer.Argument(
    ..., metavar="SCHEDULE", help="The schedule's id, or the short id `schedules ls` shows."
)
FIRINGS_SHOWN = 10


# The schedule requests, kept beside their commands (api.py is at the modules' size limit).
def create_schedule(client: ApiClient, body: dict[str, Any]) -> Any:
    return client._json("POST", "/schedules", json=body)


def list_schedules(client: ApiClient) -> list[Any]:
    return client._all("/schedules")


def get_schedule(client: ApiClient, schedule_id: str) -> Any:
    return client._json("GET", f"/schedules/{schedule_id}")


def update_schedule(client: ApiClient, schedule_id: str, patch: dict[str, Any]) -> Any:
    return client._json("PATCH", f"/schedules/{schedule_id}", json=patch)


def delete_schedule(client: ApiClient, schedule_id: str) -> None:
    client._request("DELETE", f"/schedules/{schedule_id}")


def schedule_page(client: ApiClient, schedule_id: str, what: str, limit: int) -> Any:
    """One page of the schedule's `bots` or `firings`, newest first."""
    return client._json("GET", f"/schedules/{schedule_id}/{what}", params={"limit": limit})


def resolve_schedule(client: ApiClient, typed: str) -> str:
    """The whole id of the one schedule whose id is, starts or ends with `typed`."""
    text = typed.strip().lower()
    if WHOLE_ID.fullmatch(text):
        return text
    ids = [s["id"] for s in list_schedules(client)] if text else []
    found = [i for i in ids if text == i[-8:]] or [i for i in ids if i.startswith(text)]
    if len(found) != 1:
        reason = "no schedule" if not found else f"{len(found)} schedules"
        output.fail(
            f"schedule_not_found: {reason} of yours match {typed!r}",
            output.NOT_FOUND if not found else output.INPUT,
        )
    return str(found[0])


def _template(path: str | None, kind: str | None, config: str) -> dict[str, Any]:
    if (path is None) == (kind is None):
        output.invalid("give either --template FILE.json or --bot KIND")
    if kind is not None:
        try:
            parsed = json.loads(config)
        except json.JSONDecodeError as exc:
            output.invalid(f"--config is not JSON: {exc.msg}")
        return {"bot": kind, "config": parsed}
    assert path is not None
    try:
        text = typer.get_text_stream("stdin").read() if path == "-" else Path(path).read_text()
        document = json.loads(text)
    except OSError as exc:
        output.invalid(f"cannot read {path}: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        output.invalid(f"{path} is not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    if not isinstance(document, dict):
        output.invalid(f"{path} must hold a JSON object (a POST /bots body)")
    return document


def _local(schedule: dict[str, Any]) -> str:
    """The next fire time as the schedule's zone shows it."""
    local = schedule.get("next_fire_local")
    if not local:
        return "paused" if schedule.get("paused") else ""
    return f"{local[:16].replace('T', ' ')} {schedule['timezone']}"


def _last(schedule: dict[str, Any]) -> str:
    outcome = schedule.get("last_outcome")
    if not outcome:
        return ""
    why = schedule.get("last_reason")
    bot = schedule.get("last_bot_id")
    return outcome + (f" ({why})" if why else "") + (f" {output.short(bot)}" if bot else "")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The schedule's name."),
    cron: str = typer.Option(..., "--cron", metavar="EXPR", help="e.g. '0 9 * * 1-5'."),
    timezone: str = typer.Option("UTC", "--tz", metavar="ZONE", help="An IANA zone."),
    template: str | None = typer.Option(
        None, "--template", metavar="FILE.json", help="The POST /bots body; - reads stdin."
    ),
    kind: str | None = typer.Option(None, "--bot", metavar="KIND", help="Instead of --template."),
    config: str = typer.Option("{}", "--config", metavar="JSON", help="With --bot."),
    duration: int | None = typer.Option(
        None, "--duration", metavar="SECONDS", min=1, help="Stop each bot after this long."
    ),
    window_end: str | None = typer.Option(
        None, "--window-end", metavar="HH:MM", help="Stop each bot at this time in the zone."
    ),
    overlap: str = typer.Option("skip", "--overlap", metavar="skip|allow|replace"),
    missed: str = typer.Option("skip", "--missed", metavar="skip|run_once"),
    paused: bool = typer.Option(False, "--paused", help="Create it paused."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a schedule: a bot from the template at each fire time, e.g. working hours with
    `--cron '0 9 * * 1-5' --tz Europe/Berlin --window-end 17:00`."""
    body: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "timezone": timezone,
        "template": _template(template, kind, config),
        "overlap": overlap,
        "missed": missed,
        "paused": paused,
    }
    if duration is not None:
        body["duration_s"] = duration
    if window_end is not None:
        body["window_end"] = window_end
    with connect(ctx) as client:
        schedule = create_schedule(client, body)
    if as_json:
        output.print_json(schedule)
        return
    output.console.print(
        f"schedule {output.escape(output.short(schedule['id']))} created; next: "
        f"{output.escape(_local(schedule) or 'never')}",
        soft_wrap=True,
    )


@app.command("ls")
def list_command(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Your schedules, newest first, with their next fire time in their zone."""
    from rich.table import Table

    with connect(ctx) as client:
        schedules = list_schedules(client)
    if as_json:
        output.print_json(schedules)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "CRON", "NEXT", "LAST"):
        table.add_column(column, no_wrap=column in {"ID", "CRON", "NEXT"})
    for schedule in schedules:
        table.add_row(
            output.plain(output.short(schedule["id"])),
            output.plain(schedule["name"]),
            output.plain(schedule["cron"]),
            output.plain(_local(schedule)),
            output.plain(_last(schedule)),
        )
    output.console.print(table)


@app.command("show")
def show(ctx: typer.Context, schedule: str = ScheduleArg, as_json: bool = JsonOpt) -> None:
    """The schedule, its template and its latest firings."""
    with connect(ctx) as client:
        schedule_id = resolve_schedule(client, schedule)
        record = get_schedule(client, schedule_id)
        firings = schedule_page(client, schedule_id, "firings", FIRINGS_SHOWN)["items"]
    if as_json:
        output.print_json({**record, "firings": firings})
        return
    names = ["id", "name", "cron", "timezone", "paused", "next_fire_at", "next_fire_local",
             "duration_s", "window_end", "overlap", "missed", "last_fired_at", "last_outcome",
             "last_reason", "last_bot_id"]  # fmt: skip
    output.console.print(output.fields_table(record, names))
    output.console.print("template: " + output.escape(json.dumps(record["template"])))
    for firing in firings:
        bot = output.short(firing.get("bot_id"))
        output.console.print(
            f"  {output.escape(firing['fired_for'])}  {output.escape(firing['outcome'])}  "
            f"{output.escape(bot or firing.get('reason') or '')}",
            soft_wrap=True,
        )


def _set_paused(ctx: typer.Context, schedule: str, paused: bool) -> None:
    with connect(ctx) as client:
        record = update_schedule(client, resolve_schedule(client, schedule), {"paused": paused})
    state = "paused" if paused else f"resumed; next: {_local(record)}"
    output.console.print(f"schedule {output.escape(output.short(record['id']))} {state}")


@app.command("pause")
def pause(ctx: typer.Context, schedule: str = ScheduleArg) -> None:
    """Stop firing (bots already started run on, and still stop at their time)."""
    _set_paused(ctx, schedule, True)


@app.command("resume")
def resume(ctx: typer.Context, schedule: str = ScheduleArg) -> None:
    """Fire again, from the next fire time after now."""
    _set_paused(ctx, schedule, False)


@app.command("rm")
def remove(ctx: typer.Context, schedule: str = ScheduleArg) -> None:
    """Delete the schedule; its bots stay (`botfleet bots ls`)."""
    with connect(ctx) as client:
        schedule_id = resolve_schedule(client, schedule)
        delete_schedule(client, schedule_id)
    output.console.print(f"schedule {output.escape(output.short(schedule_id))} deleted")


@app.command("bots")
def bots(ctx: typer.Context, schedule: str = ScheduleArg, as_json: bool = JsonOpt) -> None:
    """The bots the schedule started, newest first."""
    with connect(ctx) as client:
        page = schedule_page(client, resolve_schedule(client, schedule), "bots", MAX_PAGE)
    if as_json:
        output.print_json(page)
        return
    output.console.print(output.bots_table(page["items"]))
