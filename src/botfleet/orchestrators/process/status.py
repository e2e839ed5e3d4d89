"""A recorded workload's status, and the exits of this manager's own children.

Only a process this manager instance launched gives an exit code (its `Popen`); one launched by an
earlier manager process is looked up in /proc by pid and start time, and once gone its exit code
is unknown. An exit, once seen, is written into the record, so the code outlives the `Popen`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.process.records import Record, WorkloadRecords, proc_stat
from botfleet.orchestrators.stopping import poll_until_gone

log = logging.getLogger(__name__)

_POLL_S = 0.05
#: How often a launch reaps the exited children of this manager (zombies); the reconciler's
#: listings reap them too.
REAP_EVERY_S = 1.0


def exited(returncode: int) -> WorkloadStatus:
    """Map a Popen return code; a signal death becomes 128+N, as shells and Docker report it."""
    if returncode >= 0:
        return WorkloadStatus(WorkloadState.EXITED, returncode, f"exited with code {returncode}")
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return WorkloadStatus(WorkloadState.EXITED, 128 - returncode, f"killed by {name}")


class Children:
    """The `Popen` objects of the processes THIS instance launched, by runtime_ref."""

    def __init__(self, records: WorkloadRecords) -> None:
        self._records = records
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._reaped_at = 0.0

    def add(self, ref: str, proc: subprocess.Popen[bytes]) -> None:
        self._procs[ref] = proc

    def forget(self, ref: str) -> None:
        self._procs.pop(ref, None)

    def status(self, ref: str, record: Record) -> WorkloadStatus:
        """Current status of a recorded workload; caller holds the ref's lock."""
        if record.get("exit_code") is not None:
            return WorkloadStatus(WorkloadState.EXITED, record["exit_code"], record["exit_detail"])
        proc = self._procs.get(ref)
        if proc is not None:
            returncode = proc.poll()  # also reaps the zombie
            if returncode is None:
                return WorkloadStatus(WorkloadState.RUNNING)
            status = exited(returncode)
            record.update(exit_code=status.exit_code, exit_detail=status.detail)
            try:
                self._records.save(ref, record)
            except OSError as exc:  # keep the Popen: the code is still known next time
                log.warning("cannot record the exit of workload %s: %s", ref, exc)
            else:
                self._procs.pop(ref, None)
            return status
        stat = proc_stat(record["pid"])
        if stat is not None and stat[1] == record["starttime"] and stat[0] not in "ZX":
            return WorkloadStatus(WorkloadState.RUNNING)
        return WorkloadStatus(
            WorkloadState.EXITED,
            None,
            "the process is gone; its exit code is unknown (another manager process started it)",
        )

    def wait_gone(
        self, ref: str, timeout: float, *, inspect: Callable[[str], WorkloadStatus]
    ) -> WorkloadStatus:
        """Our own child is waited for (it gives the exit code); another's is polled in /proc."""
        proc = self._procs.get(ref)
        if proc is not None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            return inspect(ref)
        return poll_until_gone(partial(inspect, ref), timeout, poll_s=_POLL_S)

    def reap(self, *, inspect: Callable[[str], WorkloadStatus]) -> None:
        """Record the exits of this manager's finished children so zombies do not pile up; at
        most every `REAP_EVERY_S` (a burst of launches must not poll every child each time),
        and only the exited ones go through `inspect`."""
        now = time.monotonic()
        if now - self._reaped_at < REAP_EVERY_S:
            return
        self._reaped_at = now
        for ref, proc in list(self._procs.items()):
            if proc.poll() is not None:
                inspect(ref)
