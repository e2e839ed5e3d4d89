"""`botfleet`: serve the manager, migrate its database, bootstrap a first user."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.panel import Panel

if TYPE_CHECKING:
    from collections.abc import Callable

    from botfleet.manager.backup import Report
    from botfleet.manager.core.settings import Settings

app = typer.Typer(help="botfleet: a control plane for fleets of bots.", no_args_is_help=True)
console = Console(stderr=True)


def get_settings() -> Settings:
    """The manager's settings, imported when a command runs: `botfleet --help` imports this
    module to list these commands, and must not pay for pydantic-settings."""
    from botfleet.manager.core.settings import get_settings as read_settings

    return read_settings()


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Per-tick scheduler chatter and Alembic's plugin list say nothing an operator needs.
    for noisy in ("apscheduler", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    from botfleet.manager.migrate import upgrade

    settings = get_settings()
    _private_data_dir(settings.data_dir)
    upgrade(settings.resolved_database_url(), settings=settings)
    console.print("[green]database is up to date[/]")


@app.command()
def serve(
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    welcome: bool = typer.Option(False, help="Print the admin token, a user key and a curl line."),
    fd: int | None = typer.Option(None, "--fd", hidden=True),
    callback_fd: int | None = typer.Option(None, "--callback-fd", hidden=True),
) -> None:
    """Serve the API (migrating first unless BOTFLEET_MIGRATE_ON_START=false)."""
    from botfleet.manager.app import create_app
    from botfleet.manager.core.listener_health import raise_descriptor_limit
    from botfleet.manager.http.serving import bind_callback_socket, serve_manager

    _logging(log_level)
    descriptors = raise_descriptor_limit()  # first: every connection and bot log costs one
    settings = get_settings()
    _private_data_dir(settings.data_dir)
    # `--fd` / `--callback-fd`: sockets the caller bound and listens on (the tests, which then
    # know the ports without racing anyone for them); BOTFLEET_PORT must name the API's.
    # The callback port is read from its socket (BOTFLEET_CALLBACK_PORT=0 picks a free one),
    # so the URL handed to bots names the port really listened on.
    callback_socket = bind_callback_socket(settings, callback_fd)
    settings = settings.model_copy(update={"callback_port": int(callback_socket.getsockname()[1])})
    if settings.migrate_on_start:
        from botfleet.manager.migrate import upgrade

        upgrade(settings.resolved_database_url(), settings=settings)
    if welcome:
        _welcome()
    logging.getLogger("botfleet.manager").info(
        "botfleet serving the API on %s:%s and bots' callbacks on %s (port %s); "
        "descriptor limit %s, connection caps %s (API) and %s (callbacks)",
        settings.host,
        settings.port,
        settings.resolved_callback_url(),
        settings.callback_port,
        descriptors,
        settings.api_max_connections,
        settings.callback_max_connections,
    )
    api = create_app(settings)
    serve_manager(
        api,
        settings,
        log_level=log_level,
        api_sockets=[socket.socket(fileno=fd)] if fd is not None else None,
        callback_socket=callback_socket,
    )


def _private_data_dir(data_dir: Path) -> None:
    """Everything the manager writes is its own: umask 0077 makes every file 0600 and every
    folder 0700 (secrets.key, admin_token, the SQLite file, workload records, bot logs, the
    embedded Redis), and the data folder is tightened even when it existed before (0755).
    Bots reach their log files through the descriptor they inherit, never by path."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)


def _welcome() -> None:
    """Show how to start a first bot: the admin token, a ready user key, a curl line."""
    from botfleet.manager.bootstrap import admin_token, bootstrap_user_key
    from botfleet.manager.core.db import make_engine, make_session_factory, transaction

    settings = get_settings()
    token, _ = admin_token(settings)
    engine = make_engine(settings.resolved_database_url())
    try:
        with transaction(make_session_factory(engine)) as session:
            user, key = bootstrap_user_key(session, settings)
    finally:
        engine.dispose()
    base = f"http://{settings.host}:{settings.port}"
    console.print(
        Panel.fit(
            f"admin token : [bold]{token}[/]\n"
            f"user        : {user.name} (max {user.max_concurrent_bots} bots)\n"
            f"API key     : [bold]{key}[/]" + _containment_line(settings),
            title=f"botfleet on {base}",
        )
    )
    # Plain lines outside the panel, so they copy and paste as they are (the tutorial's walk
    # starts from them).
    body = '{"bot": "demo", "config": {}}'
    lines = [
        "Try it from another terminal (the key stays the same on every start):",
        f"  export BOTFLEET_URL={base} BOTFLEET_KEY={key} BOTFLEET_ADMIN_TOKEN={token}",
    ]
    if cli_dir := _cli_dir_missing_from_path():
        lines.append(f'  export PATH="{cli_dir}:$PATH"   # the botfleet command')
    lines += [
        '  curl -s -X POST "$BOTFLEET_URL/bots" -H "Authorization: Bearer $BOTFLEET_KEY" '
        f"-H 'Content-Type: application/json' -d '{body}'",
        "  botfleet bots ls",
        f"API docs: {base}/docs",
        f"Dashboard: {base}/ui   (sign in with the API key or the admin token)",
    ]
    print("\n".join(lines) + "\n", flush=True)


def _containment_line(settings: Settings) -> str:
    """What fences each bot in, on the process backend (the others' engines say it)."""
    if settings.orchestrator != "process":
        return ""
    from rich.markup import escape

    from botfleet.orchestrators.process import ProcessOrchestratorConfig, containment

    config = ProcessOrchestratorConfig.from_manager(settings)
    return f"\ncontainment : {escape(containment.describe(config))}"


def _cli_dir_missing_from_path() -> str | None:
    """The folder of this environment's `botfleet` command when PATH does not lead to it
    (`make run` uses .venv/bin without activating it)."""
    here = Path(sys.executable).parent
    if not (here / "botfleet").exists():
        return None
    found = shutil.which("botfleet")
    if found and Path(found).parent.resolve() == here.resolve():
        return None
    return str(here)


@app.command("rotate-secrets")
def rotate_secrets() -> None:
    """Re-seal every bot's secrets and every webhook signing secret with the newest key of
    BOTFLEET_SECRETS_KEYS.

    Rotation: put the new key first (`new,old`), restart the managers, run this, then drop the
    old key.
    """
    from sqlalchemy import select

    from botfleet.manager.core.db import make_engine, make_session_factory, transaction
    from botfleet.manager.core.models import Bot
    from botfleet.manager.core.sealing import load_box
    from botfleet.manager.core.webhook_models import WebhookEndpoint

    settings = get_settings()
    box = load_box(settings)
    engine = make_engine(settings.resolved_database_url())
    count = hooks = 0
    try:
        with transaction(make_session_factory(engine)) as session:
            for bot in session.scalars(select(Bot).where(Bot.secrets_sealed.is_not(None))):
                bot.secrets_sealed = box.reseal(bot.secrets_sealed or "")
                count += 1
            for endpoint in session.scalars(select(WebhookEndpoint).with_for_update()):
                endpoint.secret_sealed = box.reseal(endpoint.secret_sealed)
                if endpoint.headers_sealed:  # its custom headers, sealed alike
                    endpoint.headers_sealed = box.reseal(endpoint.headers_sealed)
                hooks += 1
    finally:
        engine.dispose()
    console.print(
        f"[green]re-sealed the secrets of {count} bots and {hooks} webhook endpoints "
        "with the newest key[/]"
    )


@app.command("backup")
def backup(
    dest: Path = typer.Argument(..., help="The archive to write, or a folder to write it in."),
) -> None:
    """Write the database and the secrets keys into one archive (0600); safe while serving.

    Keys given in BOTFLEET_SECRETS_KEYS cannot go in: keep them with the archive.
    """
    from botfleet.manager.backup import write_backup

    os.umask(0o077)
    _report(lambda: write_backup(get_settings(), dest))


@app.command("restore")
def restore(
    archive: Path = typer.Argument(..., help="An archive `botfleet backup` wrote."),
    force: bool = typer.Option(False, "--force", help="Replace a database that is not empty."),
    migrate: bool = typer.Option(True, help="Bring an older archive's schema up to date."),
) -> None:
    """Put back the database and the secrets keys from a backup, then check that the keys open
    the sealed secrets. Stop every manager on this database first."""
    from botfleet.manager.backup import restore_backup

    settings = get_settings()
    _private_data_dir(settings.data_dir)
    _report(lambda: restore_backup(settings, archive, force=force, migrate=migrate))


def _report(run: Callable[[], Report]) -> None:
    """Print what a backup or restore did; exit 1 when it stopped or left secrets unopened."""
    from botfleet.manager.backup import BackupError

    try:
        report = run()
    except BackupError as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for line in report.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in report.warnings:
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@app.command("create-user")
def create_user(name: str, max_concurrent_bots: int = typer.Option(10, min=0)) -> None:
    """Create a user directly in the database and print its API key."""
    from botfleet.manager.core.db import make_engine, make_session_factory, transaction
    from botfleet.manager.services.users import create_user as create

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with transaction(make_session_factory(engine)) as session:
            user, key = create(session, name=name, max_concurrent_bots=max_concurrent_bots)
    finally:
        engine.dispose()
    typer.echo(f"{user.id} {key}")


if __name__ == "__main__":
    app()
