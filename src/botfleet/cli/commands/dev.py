"""`botfleet kinds export` and `botfleet dev run`: a Python author's loop, from a bot class to a
running bot, without writing a kind document by hand.

Both read the class's declarations through the runtime's own `kind_document`
(`python -m botfleet.runtime kind` prints the same). The module is imported from the current
directory first, as `python -m` would. `dev run` registers (or updates) the kind with the admin
token, starts one bot of it with the API key, then shows the bot's log, its transitions,
reports and command answers, and sends what is typed on stdin (`help` lists it). Ctrl-C stops
the bot; a second Ctrl-C leaves it running. Where the manager has no kinds API, or no admin
token is at hand, the bot is started as `module:Class` (the manager must allow the module).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from typing import Any

import typer

from botfleet.cli import help_format, output
from botfleet.cli.api import ApiClient, ApiError, Unreachable
from botfleet.cli.commands.events import describe
from botfleet.cli.config import ConfigError, Connection
from botfleet.cli.sse import Event

app = help_format.Typer(help="Run a bot you are writing against a local manager.")
ENDED = {"completed", "failed"}
LOG_DRAIN_S = 5.0  # how long the last log lines may take to arrive once the bot has ended
HELP = "type: <action> {json}  (a command) | reconfigure {json} | secrets {json} | leave | help"
BotClass = typer.Argument(..., metavar="MODULE:CLASS", help="The bot class, e.g. mybots:Greeter.")


def _document(spec: str, name: str | None, image: str | None = None) -> dict[str, Any]:
    """The kind document, the author's module imported from the current directory."""
    from botfleet.runtime.kind import kind_document
    from botfleet.runtime.loader import BotLoadError

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return kind_document(spec, name=name, image=image)
    except (BotLoadError, TypeError, ValueError) as exc:
        output.fail(str(exc), output.INPUT)


def export_kind(
    spec: str = BotClass,
    name: str | None = typer.Option(None, "--name", help="The kind's name (default: the class's)."),
    image: str | None = typer.Option(None, "--image", help="The image docker/nomad run it in."),
) -> None:
    """Print the kind document of a bot class (JSON for `POST /admin/kinds`)."""
    output.print_json(_document(spec, name, image))


@app.command("run")
def run(
    ctx: typer.Context,
    spec: str = BotClass,
    config: str = typer.Option("{}", "--config", metavar="JSON", help="The bot's config."),
    secret: list[str] = typer.Option([], "--secret", metavar="KEY=VALUE", help="Repeatable."),
    name: str | None = typer.Option(None, "--kind", help="The kind's name (default: the class's)."),
    tail: int = typer.Option(50, "--tail", min=1, help="Log lines shown from before the start."),
) -> None:
    """Register the bot's kind, start one bot of it, show its log and reports; commands typed on
    stdin are sent to it (`help` lists them); Ctrl-C stops it."""
    # Here, not at the top: `kinds list` imports this module (for `kinds export`), and importing
    # anything of `bots` imports all of its commands.
    from botfleet.cli.commands.bots.inputs import parse_pairs

    body = _start_body(spec, name, config, parse_pairs(secret, typed=False))
    connection = ctx.find_root().obj or Connection()
    try:
        url, key = connection.resolve()
        _, admin_token = connection.resolve(admin=True)
    except ConfigError as exc:
        output.fail(str(exc), output.INPUT)
    if not key:
        output.fail(
            "no API key: dev run starts the bot as a user (--key or BOTFLEET_KEY)", output.AUTH
        )
    try:
        body["bot"] = _register(url, admin_token, body.pop("kind"), spec)
        with ApiClient(url, key) as client:
            bot = client.start_bot(body)
        raise typer.Exit(Session(url, key, bot, tail=tail).follow())
    except ApiError as exc:
        output.fail(_api_error(exc), output.exit_code(exc.status))
    except Unreachable as exc:
        output.fail(f"cannot reach botfleet at {exc.url} ({exc.reason})", output.SERVER)


def _start_body(
    spec: str, name: str | None, raw_config: str, secrets: dict[str, str]
) -> dict[str, Any]:
    """The POST /bots body (and the kind, under `kind`), checked against the class first, so
    a wrong config is told with its paths before the manager is asked anything."""
    from botfleet.runtime.declare import Refused, declared_secrets, describe_errors
    from botfleet.runtime.loader import load_bot_class

    try:
        config = json.loads(raw_config)
    except ValueError as exc:
        output.invalid(f"--config is not JSON: {exc}")
    if not isinstance(config, dict):
        output.invalid("--config must be a JSON object")
    document = _document(spec, name)
    bot_class = load_bot_class(spec)
    try:
        bot_class.parse_config(config)
    except Refused as exc:
        output.fail(f"{exc.code}: {describe_errors(exc.errors)}", output.INPUT)
    if missing := [n for n in declared_secrets(bot_class) if n not in secrets]:
        output.fail(f"missing_secret: {', '.join(missing)} (--secret NAME=VALUE)", output.INPUT)
    body: dict[str, Any] = {"kind": document, "config": config, "name": f"dev {document['name']}"}
    if secrets:
        body["secrets"] = secrets
    return body


def _register(url: str, admin_token: str | None, document: dict[str, Any], spec: str) -> str:
    """What to start: the kind, registered or updated to a new version; `module:Class` where
    there is no admin token or no kinds API."""
    if not admin_token:
        _note("no admin token (BOTFLEET_ADMIN_TOKEN): starting the bot as " + spec)
        return spec
    name = document["name"]
    with ApiClient(url, admin_token) as admin:
        try:
            kind = admin.register_kind(document)
        except ApiError as exc:
            if exc.status in (404, 405) and exc.code in {"not_found", "http_404", "http_405"}:
                _note(f"this manager has no kinds API: starting the bot as {spec}")
                return spec
            if exc.status != 409 or exc.code not in {"kind_exists", "kind_retired"}:
                raise
            definition = {k: v for k, v in document.items() if k != "name"}
            kind = admin.update_kind(name, definition)
    _note(f"kind {name} version {kind.get('version', '?')} registered")
    return name


class Session:
    """One running bot in the terminal: its log (a thread), its events (a thread), stdin (a
    thread), all printed from here; each thread has its own HTTP client."""

    def __init__(self, url: str, key: str, bot: dict[str, Any], *, tail: int = 50) -> None:
        self.url, self.key, self.bot_id, self.tail = url, key, bot["id"], tail
        self.status: str = bot.get("status", "requested")
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.transitioned = threading.Event()
        _note(f"bot {self.bot_id} {self.status}; {HELP}")

    def follow(self) -> int:
        """Until the bot ends: 0 when it completed, 1 when it failed, 130 on a second Ctrl-C."""
        logs = threading.Thread(target=self._logs, daemon=True)
        logs.start()
        for target in (self._events, self._stdin):
            threading.Thread(target=target, daemon=True).start()
        stopping = False
        with ApiClient(self.url, self.key) as client:
            while self.status not in ENDED:
                try:
                    self._step(client)
                except KeyboardInterrupt:
                    if stopping:
                        _note(f"leaving bot {self.bot_id} running")
                        return 130
                    stopping = True
                    _note("stopping the bot (Ctrl-C again to leave it running)")
                    client.stop_bot(self.bot_id)
            self.transitioned.set()
            logs.join(timeout=LOG_DRAIN_S)  # its last lines, before the verdict
            _note(f"bot {self.bot_id} {self.status}")
        return 0 if self.status == "completed" else 1

    def _step(self, client: ApiClient) -> None:
        try:
            kind, item = self.inbox.get(timeout=5)
        except queue.Empty:  # a backstop for a dropped event stream
            self.status = client.get_bot(self.bot_id)["status"]
            return
        if kind == "event":
            self._show(client, item)
        elif kind == "line":
            self._send(client, item)

    def _show(self, client: ApiClient, event: Event) -> None:
        try:
            data = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("bot_id") != self.bot_id:
            return
        if event.event == "transition":
            self.status = str(data.get("to"))
            self.transitioned.set()
        if event.event == "command" and data.get("status") in {"acked", "failed"}:
            command = client.get_command(self.bot_id, str(data["command_id"]))
            answer = command.get("result") if command["status"] == "acked" else command["error"]
            shown = json.dumps(answer) if command["status"] == "acked" else answer
            _note(f"{command['action']} {command['status']}: {shown}")
            return
        if event.event != "command":
            output.console.print("» " + describe(event), soft_wrap=True)

    def _send(self, client: ApiClient, line: str) -> None:
        word, _, rest = line.strip().partition(" ")
        if not word:
            return
        try:
            argument = json.loads(rest) if rest.strip() else {}
        except ValueError as exc:
            _note(f"not JSON: {exc}")
            return
        if word in {"help", "?"}:
            _note(HELP)
            return
        try:
            if word in {"leave", "stop"}:
                client.stop_bot(self.bot_id)
            elif not isinstance(argument, dict):
                _note("the JSON must be an object")
            elif word == "reconfigure":
                client.replace_config(self.bot_id, argument)
            elif word == "secrets":
                client.replace_secrets(self.bot_id, argument)
            else:
                client.send_command(self.bot_id, word, argument)
        except ApiError as exc:
            _note(_api_error(exc))

    def _logs(self) -> None:
        """Follow each workload's output (a restart is a new one) once it exists: the manager
        answers a follow without a workload with the kept lines only."""
        followed: set[str] = set()
        with ApiClient(self.url, self.key) as client:
            while True:
                try:
                    bot = client.get_bot(self.bot_id)
                    ref = bot.get("runtime_ref")
                    if ref and ref not in followed:
                        followed.add(ref)
                        for line in client.follow_logs(self.bot_id, tail=self.tail):
                            output.echo(line, multiline=True)
                        continue
                    if bot["status"] in ENDED:
                        return
                except (ApiError, Unreachable) as exc:
                    _note(f"log stream: {exc}")
                self.transitioned.wait(1.0)  # a new workload comes with a transition
                self.transitioned.clear()

    def _events(self) -> None:
        with ApiClient(self.url, self.key) as client:
            try:
                for event in client.events():
                    self.inbox.put(("event", event))
            except (ApiError, Unreachable) as exc:
                _note(f"event stream ended: {exc}")

    def _stdin(self) -> None:
        for line in sys.stdin:
            self.inbox.put(("line", line))


def _api_error(exc: ApiError) -> str:
    """`code: message`, and each `{path, message}` of a 422 the kind's schema raised."""
    detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
    errors = detail.get("errors") if isinstance(detail, dict) else None
    lines = [f"{exc.code}: {exc.message}"]
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            lines.append(f"  {error.get('path') or '/'}: {error.get('message')}")
    return "\n".join(lines)


def _note(text: str) -> None:
    output.err.print("[cyan]»[/] " + output.escape(text), soft_wrap=True)
