"""First-start chores: the admin token and, for `make run`, a ready user."""

from __future__ import annotations

import os
from pathlib import Path

from manager.config import Settings
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
