"""Nomad's job and allocation states in the shared vocabulary (`WorkloadStatus`).

The reconciler sees only that vocabulary; every Nomad-specific reading of an answer lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrators.base import WorkloadState, WorkloadStatus
from orchestrators.nomad.jobspec import TASK


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


def newest_alloc(allocs: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The allocation that speaks for the job (a job is never rescheduled, but be exact)."""
    return max(allocs, key=lambda a: (a.get("CreateIndex", 0), a.get("CreateTime", 0)))


def job_status(job: Mapping[str, Any], allocs: list[Mapping[str, Any]]) -> WorkloadStatus:
    """A job's status: its newest allocation's, or pending/exited while it has none."""
    if allocs:
        return alloc_status(newest_alloc(allocs))
    if job.get("Status") == "dead":
        return WorkloadStatus(WorkloadState.EXITED, None, "the job ended without an allocation")
    return WorkloadStatus(WorkloadState.PENDING, detail="no allocation placed yet")


def summary_status(stub: Mapping[str, Any]) -> WorkloadStatus | None:
    """A live job's status from the listing's summary; None when only the job itself can say
    (it is dead, so its exit code matters)."""
    if stub.get("Status") == "dead":
        return None
    summary = (stub.get("JobSummary") or {}).get("Summary") or {}
    counts = summary.get(TASK) or {}
    if counts.get("Running"):
        return WorkloadStatus(WorkloadState.RUNNING)
    if counts.get("Queued") or counts.get("Starting") or not counts:
        return WorkloadStatus(WorkloadState.PENDING)
    return None


def is_live(alloc: Mapping[str, Any]) -> bool:
    return alloc.get("ClientStatus") in ("pending", "running")
