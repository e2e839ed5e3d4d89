"""A recorded workload's status, and the exits of this manager's own children.

Only a process this manager instance launched gives an exit code (its `Popen`); one launched by an
earlier manager process is looked up in /proc by pid and start time, and once gone its exit code
is unknown. An exit, once seen, is written into the record, so the code outlives the `Popen`.

A workload has ended only once none of its processes remain: its main process, and every
process of its cgroup (else of its own uid, else of its process group), wherever they moved
(setsid, a double fork). Until then it is still running, whatever its main process did. When
the kernel's OOM killer ended any of its processes, the workload ends as a whole (what cgroup
v2's memory.oom.group does; on v1 the rest are killed here) with the reason `out_of_memory`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.process import containment
from botfleet.orchestrators.process.containment import OUT_OF_MEMORY
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


def _group_members(pgid: int) -> list[int]:
    """Live processes of the process group `pgid` (field 5 of /proc/<pid>/stat)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] not in "ZX" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def remaining(record: Record) -> list[int]:
    """The workload's processes still alive: its cgroup's, else its own uid's, else its
    process group's (a bot under the manager's user can leave its group: setsid)."""
    cgroup = containment.of_record(record)
    if cgroup is not None:
        return sorted(cgroup.pids())
    if record.get("uid") is not None:
        return isolation.processes_of_uid(record["uid"])
    return _group_members(record["pid"])


def _ended(record: Record) -> WorkloadStatus:
    reason = record.get("exit_reason")
    return WorkloadStatus(
        WorkloadState.EXITED, record["exit_code"], record["exit_detail"], reason=reason
    )


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
        ended = record.get("ended", record.get("exit_code") is not None)  # (older records)
        if ended and (record.get("exit_code") is not None or ref not in self._procs):
            return _ended(record)  # else our own child tells the code another manager could not
        cgroup = containment.of_record(record)
        oom_kills = cgroup.oom_kills() if cgroup is not None else 0
        if oom_kills:
            cgroup.kill()  # type: ignore[union-attr]  # the bot ends as a whole
        main = self._main_status(ref, record)
        if main.state != WorkloadState.EXITED:
            return main
        left = remaining(record)
        if left:
            return WorkloadStatus(
                WorkloadState.RUNNING,
                detail=f"its main process ended ({main.detail}); {len(left)} of its processes "
                "still run",
            )
        if oom_kills:
            mib = self._records_memory_mib(record)
            record["exit_reason"] = OUT_OF_MEMORY
            record["exit_detail"] = (
                f"out of memory: the kernel's OOM killer ended {oom_kills} of its processes at "
                f"its limit{mib}; then the rest ({main.detail})"
            )
        record["ended"] = True
        self._save(ref, record)
        return _ended(record)

    @staticmethod
    def _records_memory_mib(record: Record) -> str:
        mib = record.get("memory_mib")
        return f" of {mib} MiB" if mib else ""

    def _save(self, ref: str, record: Record) -> None:
        try:
            self._records.save(ref, record)
        except OSError as exc:  # keep the Popen: the code is still known next time
            log.warning("cannot record the exit of workload %s: %s", ref, exc)
        else:
            self._procs.pop(ref, None)

    def _main_status(self, ref: str, record: Record) -> WorkloadStatus:
        """The main process's status: RUNNING, or EXITED with what is known of its exit (kept
        in the record)."""
        proc = self._procs.get(ref)
        if proc is None and (record.get("exit_code") is not None or record.get("exit_detail")):
            return WorkloadStatus(WorkloadState.EXITED, record["exit_code"], record["exit_detail"])
        if proc is not None:
            returncode = proc.poll()  # also reaps the zombie
            if returncode is None:
                return WorkloadStatus(WorkloadState.RUNNING)
            status = exited(returncode)
            record.update(exit_code=status.exit_code, exit_detail=status.detail)
            self._save(ref, record)
            return status
        stat = proc_stat(record["pid"])
        if stat is not None and stat[1] == record["starttime"] and stat[0] not in "ZX":
            return WorkloadStatus(WorkloadState.RUNNING)
        detail = (
            "the process is gone; its exit code is unknown (another manager process started it)"
        )
        record.update(exit_detail=detail)
        return WorkloadStatus(WorkloadState.EXITED, None, detail)

    def wait_gone(
        self, ref: str, timeout: float, *, inspect: Callable[[str], WorkloadStatus]
    ) -> WorkloadStatus:
        """Our own child is waited for (it gives the exit code); another's is polled in /proc."""
        deadline = time.monotonic() + timeout
        proc = self._procs.get(ref)
        if proc is not None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # then whatever it left behind, for the rest of the time
        remaining_s = max(0.0, deadline - time.monotonic())
        return poll_until_gone(partial(inspect, ref), remaining_s, poll_s=_POLL_S)

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
