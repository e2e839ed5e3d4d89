"""Nomad's job and allocation states in the shared vocabulary (`WorkloadStatus`).

The reconciler sees only that vocabulary; every Nomad-specific reading of an answer lives here.

A node that stops heartbeating is marked down (our jobs set no `Disconnect.LostAfter`, so never
"disconnected": nomad/heartbeat.go, `disconnectState`). With `Disconnect.Replace: false` its
running allocation turns `unknown` and is kept, never replaced; one still starting (`pending`)
is marked `lost` (DesiredStatus stop) and replaced all the same (scheduler/reconciler/filters.go,
`classificationRules`). `unknown` is "cannot tell", never an exit. `lost` is the servers' word,
not the task's end: the client may have started the task before it was cut off. What ends it is
the client itself, which destroys every allocation it holds once its last heartbeat is older
than `Disconnect.StopOnClientAfter` (client/heartbeatstop.go); the servers trust that only
StopOnClientAfter plus the longest KillTimeout (at least 5 s) after marking it lost, when they
place its replacement (nomad/structs/alloc.go `WaitClientStop`, filters.go `delayByStopAfter`).
botfleet reads a lost allocation as ended at that same moment, and not before (on the
manager's clock: the client stopped counting at its last heartbeat, at least a heartbeat TTL
before the servers marked it lost, which covers a few seconds of skew); a client that comes back
reports the task's real end, which then wins (nomad/state/state_store.go,
`nestedUpdateAllocFromClient`: the client is the authority on ClientStatus).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.nomad.jobspec import TASK

#: Nomad's floor on the kill timeout it waits for (nomad/structs/structs.go, DefaultKillTimeout).
DEFAULT_KILL_TIMEOUT_NS = 5_000_000_000
#: AllocState.Field of a ClientStatus change (nomad/structs/alloc.go, AllocStateFieldClientStatus).
_CLIENT_STATUS_FIELD = 0


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


def _node(alloc: Mapping[str, Any]) -> str:
    return str(alloc.get("NodeName") or str(alloc.get("NodeID") or "")[:8] or "?")


def _group(job: Mapping[str, Any] | None) -> Mapping[str, Any]:
    groups = (job or {}).get("TaskGroups") or [{}]
    return groups[0] or {}


def _parse_time_ns(value: Any) -> int | None:
    """A Go time.Time as JSON (RFC 3339, nanoseconds) in Unix nanoseconds; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(moment.timestamp() * 1e9)


def lost_at_ns(alloc: Mapping[str, Any]) -> int:
    """When the servers marked the allocation lost: its last ClientStatus change to "lost" in
    AllocStates (the full allocation carries them, a listing's stub does not), else its
    ModifyTime, which is never earlier."""
    for state in reversed(alloc.get("AllocStates") or []):
        if state.get("Field") == _CLIENT_STATUS_FIELD and state.get("Value") == "lost":
            at = _parse_time_ns(state.get("Time"))
            if at is not None:
                return at
    return int(alloc.get("ModifyTime") or 0)


def client_stop_deadline_ns(alloc: Mapping[str, Any], job: Mapping[str, Any] | None) -> int | None:
    """When Nomad holds a lost allocation's task stopped by its client: lost + StopOnClientAfter
    + the longest KillTimeout, at least 5 s (nomad/structs/alloc.go, `WaitClientStop`); None
    when the group sets no StopOnClientAfter (then Nomad replaces it at once: it counts it
    gone)."""
    group = _group(job)
    stop_after = (group.get("Disconnect") or {}).get("StopOnClientAfter")
    if stop_after is None:
        return None
    kill = max(
        [DEFAULT_KILL_TIMEOUT_NS]
        + [int(task.get("KillTimeout") or 0) for task in group.get("Tasks") or []]
    )
    return lost_at_ns(alloc) + int(stop_after) + kill


def _lost_status(
    alloc: Mapping[str, Any], job: Mapping[str, Any] | None, now_ns: int
) -> WorkloadStatus:
    """A lost allocation: ended once Nomad itself counts its task stopped, unknown before."""
    code, detail = _exit_code(alloc)
    if code is not None:  # it ended before its node was lost: that exit is the answer
        return WorkloadStatus(WorkloadState.EXITED, code, detail)
    deadline = client_stop_deadline_ns(alloc, job)
    node = _node(alloc)
    if deadline is None:
        return WorkloadStatus(
            WorkloadState.EXITED, None, f"allocation lost (node {node})", reason="node_lost"
        )
    if now_ns < deadline:
        wait_s = (deadline - now_ns) / 1e9
        return WorkloadStatus(
            WorkloadState.UNKNOWN,
            detail=f"allocation lost while node {node} is down: the bot may still run there "
            f"until its client stops it (Disconnect.StopOnClientAfter), within {wait_s:.0f}s",
        )
    return WorkloadStatus(
        WorkloadState.EXITED,
        None,
        f"allocation lost: node {node} went down; its client stopped the bot "
        "(Disconnect.StopOnClientAfter)",
        reason="node_lost",
    )


def alloc_status(
    alloc: Mapping[str, Any],
    job: Mapping[str, Any] | None = None,
    *,
    now_ns: int | None = None,
) -> WorkloadStatus:
    """One allocation's ClientStatus (and its task's exit) in the shared vocabulary; `job` (the
    allocation's job) says when a lost one counts as ended (`client_stop_deadline_ns`)."""
    client_status = alloc.get("ClientStatus", "")
    if client_status == "pending":
        return WorkloadStatus(WorkloadState.PENDING)
    if client_status == "running":
        return WorkloadStatus(WorkloadState.RUNNING)
    if client_status in ("complete", "failed"):
        code, detail = _exit_code(alloc)
        return WorkloadStatus(WorkloadState.EXITED, code, detail)
    if client_status == "lost":
        return _lost_status(alloc, job, time.time_ns() if now_ns is None else now_ns)
    if client_status == "unknown":
        return WorkloadStatus(
            WorkloadState.UNKNOWN,
            detail=f"allocation unknown: node {_node(alloc)} is down, the bot may still run there",
        )
    return WorkloadStatus(
        WorkloadState.UNKNOWN, detail=f"nomad allocation status {client_status!r}"
    )


def first_alloc(allocs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The allocation that is the bot: the job's first. botfleet owns restarts, so Nomad never
    places another one for a healthy job; one it did place is a second copy (`extra_copies`)."""
    return min(allocs, key=lambda a: (a.get("CreateIndex", 0), a.get("CreateTime", 0)))


def extra_copies(allocs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Live allocations other than the first one Nomad means to keep running: copies of the bot
    (and of its token) that must not run (a replacement placed for a lost allocation, an
    operator's `nomad alloc stop`, which reschedules)."""
    if len(allocs) < 2:
        return []
    first = first_alloc(allocs)
    return [
        a
        for a in allocs
        if a is not first and is_live(a) and a.get("DesiredStatus", "run") == "run"
    ]


def job_status(
    job: Mapping[str, Any],
    allocs: Sequence[Mapping[str, Any]],
    *,
    blocked: str | None = None,
    now_ns: int | None = None,
) -> WorkloadStatus:
    """A job's status: its first allocation's, or pending/exited while it has none (`blocked`:
    why Nomad could not place it, from its evaluations)."""
    if allocs:
        return alloc_status(first_alloc(allocs), job, now_ns=now_ns)
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
    if counts.get("Lost") or counts.get("Unknown"):
        return None  # a node lost or down: only the allocation says what botfleet may conclude
    if counts.get("Running"):
        return WorkloadStatus(WorkloadState.RUNNING)
    if counts.get("Queued") or counts.get("Starting") or not counts:
        return WorkloadStatus(WorkloadState.PENDING)
    return None


def is_live(alloc: Mapping[str, Any]) -> bool:
    return alloc.get("ClientStatus") in ("pending", "running")
