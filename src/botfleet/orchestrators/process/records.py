"""Workload records: one small JSON file per workload under `<data_dir>/workloads/`.

They let a new manager process find the bots an earlier one launched. A record names the process
by pid AND start time (field 22 of /proc/<pid>/stat), which guards against pid reuse; it never
holds the environment. Each record has its own lock, so a status read never races an exit being
recorded or a removal.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import BackendUnavailable

#: A runtime_ref: `<pid>-<start time>`.
REF = re.compile(r"^(\d+)-(\d+)$")

#: One workload's record, as saved (see `ProcessOrchestrator.launch` for its fields).
Record = dict[str, Any]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, or None when /proc has no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # comm may contain spaces and parentheses
    return fields[0], int(fields[19])  # fields[0] is field 3 (state), fields[19] field 22


class WorkloadRecords:
    """The records folder, and a lock per runtime_ref."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()  # protects _locks; never held while waiting

    def lock_for(self, ref: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(ref, threading.Lock())

    def forget_lock(self, ref: str) -> None:
        with self._guard:
            self._locks.pop(ref, None)

    def ensure_dir(self) -> None:
        isolation.private_dir(self.directory)

    def path(self, ref: str) -> Path:
        return self.directory / f"{ref}.json"

    def refs(self) -> list[str]:
        """Every recorded runtime_ref, sorted."""
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list {self.directory}: {exc}") from exc
        return [path.stem for path in paths]

    def load(self, ref: str) -> Record | None:
        """The record of `ref`, None if there is none; an unreadable one is not 'not found'."""
        if not REF.match(ref):
            return None
        try:
            record: Record = json.loads(self.path(ref).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot read the record of workload {ref}: {exc}") from exc
        return record

    def save(self, ref: str, record: Record) -> None:
        """Write atomically (0600) so a crash never leaves half a record."""
        tmp = self.path(ref).with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=2))
        os.replace(tmp, self.path(ref))

    def delete(self, ref: str) -> None:
        self.path(ref).unlink(missing_ok=True)
