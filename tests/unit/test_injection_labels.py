"""What a bot sends never becomes structure elsewhere (issue 15, item 9), the pure parts: reason
labels are a bounded set, and the CLI's event lines show a bot's text literally, never as Rich
markup."""

from __future__ import annotations

from rich.console import Console

from botfleet.cli.commands.events import describe
from botfleet.cli.sse import Event
from botfleet.manager.core.metrics import KNOWN_REASONS, reason_label

HOSTILE = "[/oops] [bold]x"


def test_reason_labels_are_a_bounded_set() -> None:
    from botfleet.manager.lifecycle.rules import Overdue
    from botfleet.runtime.bot import LEAVE_BY_BOT, LEAVE_COMMAND, LEAVE_SIGINT, LEAVE_SIGTERM

    runtime = {LEAVE_BY_BOT, LEAVE_COMMAND, LEAVE_SIGINT, LEAVE_SIGTERM}
    overdue = {o.value[1] for o in Overdue}
    assert runtime | overdue <= KNOWN_REASONS
    assert reason_label("heartbeat_lost") == "heartbeat_lost"
    assert {reason_label(f"made_up_{n}") for n in range(1000)} == {"other"}


def rendered(markup: str) -> str:
    console = Console(width=300, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(markup, soft_wrap=True)
    return console.export_text()


def test_events_lines_show_bot_text_literally() -> None:
    transition = Event(
        id="1",
        event="transition",
        data='{"bot_id": "b", "from": "active", "to": "stopping", "reason": "r[x]", '
        '"source": "runtime", "detail": "[/oops] [bold]x", "at": "2026-01-01T00:00:00Z"}',
    )
    command = Event(
        id="2",
        event="command",
        data='{"bot_id": "b", "action": "reconfigure", "command_id": "c", '
        '"status": "failed", "error": "[/] boom\\\\"}',
    )
    assert HOSTILE in rendered(describe(transition))
    assert "r[x]" in rendered(describe(transition))
    assert "[/] boom\\" in rendered(describe(command))
    assert "[red]" in rendered(describe(Event(id="3", event="[red]", data="[/x]")))
