"""Bots' persistent folders (`state_key`): one per user and key, kept across attempts.

With bot uids the folder is handed to the attempt's uid while it runs and back to root when the
attempt is removed (before its uid may serve another bot); it lives outside the manager's 0700
data folder, which bot uids cannot enter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import StateRef
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig


class StateFolders:
    """Where state folders are, and who owns each; one change of hands at a time."""

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()

    def root(self, own_uid: bool) -> Path:
        if self.config.state_root is not None:
            return self.config.state_root
        return isolation.DEFAULT_STATE_ROOT if own_uid else self.config.data_dir / "state"

    def prepare(self, state: StateRef, uid: int | None) -> Path:
        """The state directory, made if new, 0700 and (with bot uids) the attempt's alone."""
        root = self.root(uid is not None)
        if uid is not None:
            isolation.ensure_traversable_root(root)  # 0711: entered, never listed, by bots
        else:
            isolation.private_dir(root)
        path = root / state.slug
        with self._lock:
            with suppress(FileExistsError):
                path.mkdir(mode=0o700)
            if not path.is_dir() or path.is_symlink():
                raise OSError(f"{path} is not a directory")
            if uid is not None:
                isolation.hand_over_tree(path, uid, self.config.bot_gid)
            path.chmod(0o700)
        return path

    def take_back(self, record: Mapping[str, Any]) -> None:
        """An ended attempt's state directory goes back to root before its uid is free again,
        unless a later attempt already holds it."""
        path, uid = record.get("state_dir"), record.get("uid")
        if not path or uid is None:
            return
        with self._lock, suppress(FileNotFoundError):
            if Path(path).stat().st_uid == uid:
                isolation.hand_over_tree(Path(path), os.geteuid(), os.getegid())

    def purge(self, state: StateRef) -> None:
        for own_uid in (True, False):
            path = self.root(own_uid) / state.slug
            with self._lock:
                isolation.remove_dir(path)
