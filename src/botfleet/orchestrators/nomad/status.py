"""Nomad's job and allocation states in the shared vocabulary (`WorkloadStatus`).

The reconciler sees only that vocabulary; every Nomad-specific reading of an answer lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.nomad.jobspec import TASK


def _exit_code(alloc: Mapping[str, Any]) -> tuple[int | None, str]:
    """The task's exit code and a detail, from its last "Terminated" event."""
    state = (alloc.get("TaskStates") or {}).get(TASK) or {}
    events = state.get("Events") or []
    for event in reversed(events):
        if event.get("Type") == "Terminated":
            code = event.get("ExitCode")
            signal = event.get("Signal") or 0
            if signal and code in (0, -1, None):
                code = 128 + signal  # killed by a signal, reported as shells and Docker do
            detail = event.get("DisplayMessage") or event.get("Message") or ""
            return code, detail or f"exited with code {code}"
    for event in reversed(events):  # no exit: say why (driver failure, setup failure...)
        message = event.get("DisplayMessage") or event.get("DriverError") or event.get("SetupError")
        if message:
            return None, f"{event.get('Type', '')}: {message}".strip(": ")
    return None, alloc.get("ClientDescription") or ""


def alloc_status(alloc: Mapping[str, Any]) -> WorkloadStatus:
    """One allocation's ClientStatus (and its task's exit) in the shared vocabulary."""
    client_status = alloc.get("ClientStatus", "")
    if client_status == "pending":
        return WorkloadStatus(WorkloadState.PENDING)
    if client_status == "running":
        return WorkloadStatus(WorkloadState.RUNNING)
    if client_status in ("complete", "failed"):
        code, detail = _exit_code(alloc)
        return WorkloadStatus(WorkloadState.EXITED, code, detail)
    if client_status == "lost":
        return WorkloadStatus(WorkloadState.EXITED, None, "allocation lost")
    return WorkloadStatus(
        WorkloadState.UNKNOWN, detail=f"nomad allocation status {client_status!r}"
    )


def first_alloc(allocs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The allocation that is the bot: the job's first. botfleet owns restarts, so Nomad never
    places another one for a healthy job; one it did place is a second copy (`extra_copies`)."""
    return min(allocs, key=lambda a: (a.get("CreateIndex", 0), a.get("CreateTime", 0)))


def extra_copies(allocs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Live allocations other than the first one Nomad means to keep running: copies of the bot
    (and of its token) that must not run (a replacement placed for a lost node, an operator's
    `nomad alloc stop`, which reschedules)."""
    if len(allocs) < 2:
        return []
    first = first_alloc(allocs)
    return [
        a
        for a in allocs
        if a is not first and is_live(a) and a.get("DesiredStatus", "run") == "run"
    ]


def job_status(
    job: Mapping[str, Any], allocs: Sequence[Mapping[str, Any]], *, blocked: str | None = None
) -> WorkloadStatus:
    """A job's status: its first allocation's, or pending/exited while it has none (`blocked`:
    why Nomad could not place it, from its evaluations)."""
    if allocs:
        return alloc_status(first_alloc(allocs))
    if job.get("Status") == "dead":
        detail = "the job ended without an allocation"
        return WorkloadStatus(
            WorkloadState.EXITED, None, f"{detail}; {blocked}" if blocked else detail
        )
    return WorkloadStatus(WorkloadState.PENDING, detail=blocked or "no allocation placed yet")


def summary_status(stub: Mapping[str, Any]) -> WorkloadStatus | None:
    """A live job's status from the listing's summary; None when only the job itself can say
    (it is dead, so its exit code matters)."""
    if stub.get("Status") == "dead":
        return None
    summary = (stub.get("JobSummary") or {}).get("Summary") or {}
    counts = summary.get(TASK) or {}
    placed = ("Starting", "Running", "Complete", "Failed", "Lost", "Unknown")
    if sum(int(counts.get(state) or 0) for state in placed) > 1:
        # More than one allocation: only the job's own say which is the bot (the first), and
        # reading them kills a second copy (`_status`). The reconciler asks the engine only
        # through its one listing per tick, so this is where it finds such a copy.
        return None
    if counts.get("Running"):
        return WorkloadStatus(WorkloadState.RUNNING)
    if counts.get("Queued") or counts.get("Starting") or not counts:
        return WorkloadStatus(WorkloadState.PENDING)
    return None


def is_live(alloc: Mapping[str, Any]) -> bool:
    return alloc.get("ClientStatus") in ("pending", "running")
