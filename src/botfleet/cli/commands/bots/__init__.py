"""`botfleet bots …`: start, list, show, reconfigure, stop and tail bots.

`lifecycle` (ls, start, show, relaunch), `batch` (stop, rm: one bot, several, or a label
selector), `messages` (config, cmd, secrets: commands a running bot answers), `logs`; `inputs`
reads the command line, `waiting` does `--wait`. Every command taking a bot id resolves a short
id or a prefix (`botfleet.cli.targets`). The commands are registered here, in the order
`botfleet bots --help` lists them.
"""

from __future__ import annotations

from botfleet.cli import help_format
from botfleet.cli.commands.bots import batch, changes, lifecycle, messages
from botfleet.cli.commands.bots import logs as log_commands
from botfleet.cli.commands.bots.inputs import parse_labels, parse_pairs, parse_value
from botfleet.cli.commands.bots.logs import new_lines

app = help_format.Typer(
    help="Start, list, inspect, reconfigure and stop bots.", no_args_is_help=True
)

app.command("ls")(lifecycle.list_bots)
app.command("start")(lifecycle.start)
app.command("show")(lifecycle.show)
app.command("edit")(changes.edit)
app.command("stop")(batch.stop)
app.command("relaunch")(lifecycle.relaunch)
app.command("rm")(batch.remove)
app.command("config")(messages.reconfigure)
app.command("cmd")(messages.send_command)
app.command("secrets")(messages.replace_secrets)
app.command("reconfigure")(changes.reconfigure)  # many bots: one bulk operation
app.command("command")(changes.command)
app.command("logs")(log_commands.logs)

__all__ = ["app", "new_lines", "parse_labels", "parse_pairs", "parse_value"]
