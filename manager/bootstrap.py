"""First-start chores: the admin token and the fleet id."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from manager.config import Settings
from manager.db import transaction
from manager.models import FleetMeta
from manager.security import new_secret


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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


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
