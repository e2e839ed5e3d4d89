"""First-start chores: the admin token, the bootstrap user's key and the fleet id."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import FleetMeta, User
from botfleet.manager.core.secrets import new_secret
from botfleet.manager.core.settings import Settings
from botfleet.manager.services.users import ensure_user, user_for_key


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token from settings, else the one kept in the data folder, else a new one.

    Returns the token and whether it was generated just now (so it gets printed once).
    """
    if settings.admin_token:
        return settings.admin_token, False
    path: Path = settings.data_dir / "admin_token"
    if path.exists():
        return path.read_text().strip(), False
    token = new_secret("bfa_")
    _write_private(path, token)
    return token, True


def bootstrap_user_key(session: Session, settings: Settings) -> tuple[User, str]:
    """The bootstrap user (`make run`'s `demo`) and its API key: the same key on every start.

    The key is kept in the data folder (0600) like the admin token, so a key saved in a shell or
    in ~/.config/botfleet/config.toml keeps working; a new one is issued only when the kept one
    is missing, revoked or belongs to another user.
    """
    name = settings.bootstrap_user or "demo"
    path: Path = settings.data_dir / "bootstrap_key"
    kept = path.read_text().strip() if path.exists() else ""
    if kept:
        user = user_for_key(session, kept)
        if user is not None and user.name == name:
            return user, kept
    user, key = ensure_user(
        session, name=name, max_concurrent_bots=settings.default_max_concurrent_bots
    )
    _write_private(path, key)
    return user, key


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only, replacing any earlier one atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    partial.replace(path)


def fleet_id(sessions: sessionmaker[Session], settings: Settings) -> str:
    """This installation's id, which labels its workloads so that fleets sharing one engine never
    take each other's workloads for orphans. Kept in the database: every replica shares it."""
    if settings.fleet_id:
        return settings.fleet_id
    with transaction(sessions) as session:
        row = session.get(FleetMeta, "fleet_id")
        if row is None:
            row = FleetMeta(key="fleet_id", value=secrets.token_hex(6))
            session.add(row)
        return row.value
