"""`botfleet events`: follow the live stream of transitions and commands."""

from __future__ import annotations

import json
from typing import Any

import typer

from botfleet.cli import output
from botfleet.cli.session import connect
from botfleet.cli.sse import Event


def describe(event: Event) -> str:
    """One line per event, as Rich markup: time, short bot id, what changed. Every value from
    the stream is escaped (a detail or an error is the bot's own text)."""
    esc = output.escape
    try:
        data: dict[str, Any] = json.loads(event.data)
    except ValueError:
        return esc(f"{event.event}: {event.data}")
    if not isinstance(data, dict):
        return esc(f"{event.event}: {event.data}")
    when = output.clock(data.get("at"))[11:] or "--:--:--"
    bot = esc(output.short(data.get("bot_id")))
    if event.event == "transition":
        what = (
            f"{esc(str(data.get('from')))} → {output.styled(data.get('to'))}  "
            f"{esc(str(data.get('reason', '')))}"
        )
        extra = [f"by {data['source']}"] if data.get("source") else []
        if (data.get("attempt") or 0) > 1:
            extra.append(f"attempt {data['attempt']}")
        if data.get("detail"):
            extra.append(str(data["detail"]))
        notes = esc(", ".join(extra))
        return f"{when}  {bot}  {what}" + (f" [dim]({notes})[/]" if extra else "")
    if event.event == "command":
        error = f": {data['error']}" if data.get("error") else ""
        return (
            f"{when}  {bot}  {esc(str(data.get('action')))} "
            f"{esc(output.short(data.get('command_id')))} "
            f"{output.styled(data.get('status'))}{esc(error)}"
        )
    if event.event == "report":
        when = output.clock(data.get("reported_at"))[11:] or when
        report = json.dumps(data.get("report"), separators=(",", ":"))
        return f"{when}  {bot}  report {esc(report)}"
    if event.event == "queued":
        where = f"queued at position {data.get('position')}, priority {data.get('priority')}"
        return f"{when}  {bot}  {esc(where)}"
    if event.event == "schedule":
        fired = f"started by schedule {output.short(data.get('schedule_id'))}"
        return f"{when}  {bot}  {esc(fired)}" + (
            f" [dim](for {esc(output.clock(data['fired_for']))})[/]"
            if data.get("fired_for")
            else ""
        )
    return f"{when}  {bot}  {esc(event.event)}: {esc(event.data)}"


def events(
    ctx: typer.Context,
    last_event_id: str | None = typer.Option(
        None, "--last-event-id", metavar="ID", help="Resume after this event id."
    ),
    as_json: bool = typer.Option(False, "--json", help="One raw JSON object per line."),
) -> None:
    """Follow your bots' transitions and commands live (reconnects on its own; Ctrl-C quits)."""
    with connect(ctx) as client:
        try:
            for event in client.events(last_event_id=last_event_id):
                if as_json:
                    typer.echo(output.json_safe(event.data))
                else:
                    output.console.print(describe(event), soft_wrap=True)
        except KeyboardInterrupt:
            return
