"""A bot's service, its task and the task's node, in the shared vocabulary (pure).

The mapping every issue-31 helper relies on (docs/how-to/swarm.md shows it to users):

- new … starting → PENDING (Swarm's reason, e.g. "no suitable node", in the detail);
- `running` → RUNNING, but UNKNOWN while its node is not `ready`: a node that is down may
  still run the bot (it does during a partition), so it is never an exit;
- `complete` → EXITED 0; `failed` → EXITED with the container's exit code;
- `shutdown` → EXITED; when Swarm shut it down itself (botfleet never scaled the service to 0),
  reason `evicted` on a drained node, else `node_lost`;
- `rejected` → EXITED, reason `image_not_found` ("No such image") or `launch_failed`;
- `orphaned` → UNKNOWN;
- a task whose node was removed from the swarm (`docker node rm`) → EXITED `node_lost`: the
  operator's removal declares the node gone. A node merely down is never proof of death.

A service botfleet scaled to 0 loses its task soon after the task ends (Swarm deletes the tasks
of a scale-down): the exit code `stop` saw is kept in the service's label `botfleet.exit_code`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus

#: A service label where `stop` records the exit code it saw, once Swarm may delete the task.
LABEL_EXIT_CODE = "botfleet.exit_code"
#: A service label the backend sets once it saw Swarm shut the task down on its own (`doomed`:
#: running, desired shutdown, the service still wanting it): the task may then end `complete`
#: or `failed` like a bot's own exit (a restarted engine SIGTERMs it), yet its node ended it.
LABEL_SHUT_BY_SWARM = "botfleet.shut_by_swarm"

PENDING_STATES = frozenset(
    {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
ENDED_STATES = frozenset({"complete", "failed", "shutdown", "rejected"})
OOM_EXIT_CODE = 137


def latest_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The service's current task: the newest (one per attempt: restart policy none)."""
    if not tasks:
        return None
    return max(tasks, key=lambda t: (str(t.get("CreatedAt", "")), _index(t)))


def _index(item: Mapping[str, Any]) -> int:
    return int((item.get("Version") or {}).get("Index") or 0)


def replicas(service: Mapping[str, Any]) -> int | None:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    wanted = (mode.get("Replicated") or {}).get("Replicas")
    return int(wanted) if wanted is not None else None


def scaled_down(service: Mapping[str, Any]) -> bool:
    """botfleet asked for its end (`stop` scaled it to 0)."""
    return replicas(service) == 0


def node_name(node: Mapping[str, Any] | None, node_id: str) -> str:
    hostname = ((node or {}).get("Description") or {}).get("Hostname")
    return str(hostname or node_id[:12] or "?")


def node_state(node: Mapping[str, Any]) -> str:
    return str((node.get("Status") or {}).get("State", "unknown"))


def task_exit_code(task: Mapping[str, Any]) -> int | None:
    code = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
    return int(code) if code is not None else None


def workload_status(
    service: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    node: Mapping[str, Any] | None,
    *,
    node_removed: bool = False,
    oom_killed: bool = False,
) -> WorkloadStatus:
    """The status of one bot's service. `node` is the task's node (None: it has none yet, or
    `node_removed`: the swarm positively has no such node any more); `oom_killed`: its node's
    engine says the container was killed for memory."""
    if task is None:
        return _without_task(service)
    status = task.get("Status") or {}
    state = str(status.get("State", ""))
    said = str(status.get("Err") or status.get("Message") or "")
    node_id = str(task.get("NodeID") or "")
    where = node_name(node, node_id)
    code = task_exit_code(task)
    if node_removed and node_id and state not in ENDED_STATES:
        detail = f"node {where} was removed from the swarm while the task was {state}"
        return WorkloadStatus(WorkloadState.EXITED, code, detail=detail, reason="node_lost")
    if state in PENDING_STATES:
        return WorkloadStatus(WorkloadState.PENDING, detail=said)
    if state == "running":
        if node is not None and node_state(node) != "ready":
            detail = f"node {where} is {node_state(node)}: the bot may still run there"
            return WorkloadStatus(WorkloadState.UNKNOWN, detail=detail)
        return WorkloadStatus(WorkloadState.RUNNING)
    if state == "complete":
        if _shut_by_swarm(service):
            return _shut_down_by_swarm(node, where, 0 if code is None else code)
        return WorkloadStatus(WorkloadState.EXITED, 0 if code is None else code, detail=said)
    if state == "failed":
        if oom_killed:
            oom = "out of memory (OOMKilled)"
            return WorkloadStatus(WorkloadState.EXITED, code, detail=oom, reason="out_of_memory")
        if _shut_by_swarm(service):
            return _shut_down_by_swarm(node, where, code)
        return WorkloadStatus(WorkloadState.EXITED, code, detail=said)
    if state == "shutdown":
        if scaled_down(service):  # as it reads once Swarm deleted the task (_without_task)
            return WorkloadStatus(WorkloadState.EXITED, code)
        return _shut_down_by_swarm(node, where, code)
    if state == "rejected":
        reason = "image_not_found" if "no such image" in said.lower() else "launch_failed"
        return WorkloadStatus(WorkloadState.EXITED, None, detail=said, reason=reason)
    if state == "orphaned":
        detail = f"Swarm lost track of the task on node {where} (orphaned)"
        return WorkloadStatus(WorkloadState.UNKNOWN, detail=detail)
    return WorkloadStatus(WorkloadState.UNKNOWN, detail=f"swarm task state {state!r}")


def doomed(service: Mapping[str, Any], task: Mapping[str, Any] | None) -> bool:
    """Swarm is shutting this running task down on its own (its node was lost or drained; the
    service still wants it) and the service does not say so yet (`LABEL_SHUT_BY_SWARM`)."""
    if task is None or (task.get("Status") or {}).get("State") != "running":
        return False
    labels = (service.get("Spec") or {}).get("Labels") or {}
    return (
        task.get("DesiredState") == "shutdown"
        and not scaled_down(service)
        and LABEL_SHUT_BY_SWARM not in labels
    )


def _shut_by_swarm(service: Mapping[str, Any]) -> bool:
    labels = (service.get("Spec") or {}).get("Labels") or {}
    return LABEL_SHUT_BY_SWARM in labels and not scaled_down(service)


def _without_task(service: Mapping[str, Any]) -> WorkloadStatus:
    """No task: not made yet, or deleted by Swarm after the scale-down `stop` asked for."""
    if not scaled_down(service):
        return WorkloadStatus(WorkloadState.PENDING, detail="waiting for Swarm to create the task")
    labels = (service.get("Spec") or {}).get("Labels") or {}
    recorded = str(labels.get(LABEL_EXIT_CODE, ""))
    if recorded.lstrip("-").isdigit():
        return WorkloadStatus(WorkloadState.EXITED, int(recorded))
    return WorkloadStatus(
        WorkloadState.EXITED, None, detail="stopped; Swarm kept no exit code for it"
    )


def _shut_down_by_swarm(
    node: Mapping[str, Any] | None, where: str, code: int | None
) -> WorkloadStatus:
    """Swarm ended the task although the service still wanted it: its node was drained, or
    it went down (the task is killed when the node comes back)."""
    availability = str(((node or {}).get("Spec") or {}).get("Availability", ""))
    if availability == "drain":
        detail = f"node {where} was drained: Swarm stopped the bot"
        return WorkloadStatus(WorkloadState.EXITED, code, detail=detail, reason="evicted")
    detail = f"Swarm shut the bot down after node {where} was lost"
    return WorkloadStatus(WorkloadState.EXITED, code, detail=detail, reason="node_lost")


def recorded_exit(status: WorkloadStatus) -> dict[str, str]:
    """The service label that keeps `status`'s exit code after Swarm deletes the task."""
    if status.state is WorkloadState.EXITED and status.exit_code is not None:
        return {LABEL_EXIT_CODE: str(status.exit_code)}
    return {}
