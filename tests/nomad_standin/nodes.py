"""Nodes lost: what Nomad's servers do with the allocations of a node that stops heartbeating,
and what its cut-off client does (scheduler/reconciler/filters.go `classificationRules`,
client/heartbeatstop.go), and a client that collects an allocation.
"""

from __future__ import annotations

import signal
import threading

from tests.nomad_standin.processes import signal_group
from tests.nomad_standin.scheduler import new_eval, place
from tests.nomad_standin.state import Alloc, Cluster, Job, iso_now


def _replaces_lost(job: Job) -> bool:
    """Whether Nomad replaces a running allocation whose node is down: Disconnect.Replace, true
    unless set (nomad/structs/group.go, NewDefaultDisconnectStrategy), whatever the reschedule
    policy says (scheduler/reconciler/filters.go, reconcile_cluster.go `computePlacements`)."""
    disconnect = job.spec["TaskGroups"][0].get("Disconnect") or {}
    return disconnect.get("Replace") is not False


def _stop_after_ns(job: Job | None) -> int | None:
    if job is None:
        return None
    stop_after = (job.spec["TaskGroups"][0].get("Disconnect") or {}).get("StopOnClientAfter")
    return None if stop_after is None else int(stop_after)


def _replacement_delay_s(job: Job) -> float:
    """How long after marking an allocation lost Nomad places its replacement: with
    StopOnClientAfter, that plus the longest KillTimeout, at least 5 s (nomad/structs/alloc.go
    `WaitClientStop`; scheduler/reconciler/filters.go `delayByStopAfter` holds the group's
    placements until then), else at once."""
    stop_after = _stop_after_ns(job)
    if stop_after is None:
        return 0.0
    tasks = job.spec["TaskGroups"][0].get("Tasks") or []
    kill = max([5_000_000_000] + [int(t.get("KillTimeout") or 0) for t in tasks])
    return (stop_after + kill) / 1e9


def _mark_lost(cluster: Cluster, job: Job | None, alloc: Alloc) -> None:
    """Caller holds the lock. The servers mark the allocation lost and stop it (DesiredStatus
    stop: reconcile_cluster.go `computeStop`, `markDelayed`), then place its replacement
    (`_replacement_delay_s` later: a follow-up evaluation)."""
    alloc.mark("lost")
    alloc.desired_status = "stop"
    alloc.desired_description = "alloc is lost since its node is down"
    cluster.touch(alloc)
    if job is not None and not job.stop:
        eval_id = new_eval(cluster, job, "node-update")
        delay = max(cluster.placement_delay_s, _replacement_delay_s(job))
        timer = threading.Timer(delay, place, (cluster, job, eval_id, alloc))
        timer.daemon = True
        timer.start()


def lose(cluster: Cluster, alloc: Alloc) -> None:
    """The node running the allocation went away for good (down, then collected): the process
    dies, and an allocation on a collected node is lost whatever Disconnect says (filters.go:
    "GC'd nodes are lost"), its replacement placed as `_mark_lost` says."""
    with cluster.lock:
        alloc.task_state = "dead"
        alloc.finished_at = iso_now()
        alloc.partitioned = True
        _mark_lost(cluster, cluster.jobs.get((alloc.namespace, alloc.job_id)), alloc)
    if alloc.proc and alloc.proc.poll() is None:
        signal_group(alloc.proc, signal.SIGKILL)


def disconnect(cluster: Cluster, alloc: Alloc) -> None:
    """The node stops heartbeating and is marked down (no Disconnect.LostAfter: never
    "disconnected", nomad/heartbeat.go `disconnectState`) while its task runs on. What the
    servers do with the allocation (scheduler/reconciler/filters.go, `classificationRules` for
    a node whose status is terminal): a running one with Disconnect.Replace false turns
    "unknown" and is kept; one still pending, or any with Replace true, is lost (`_mark_lost`).
    The client, cut off, reports nothing more, and destroys the allocation once
    StopOnClientAfter has passed since its last heartbeat (client/heartbeatstop.go)."""
    with cluster.lock:
        job = cluster.jobs.get((alloc.namespace, alloc.job_id))
        alloc.partitioned = True  # from now on its client's news never reach the servers
        if alloc.client_status == "running" and job is not None and not _replaces_lost(job):
            alloc.mark("unknown")
            alloc.client_description = "alloc is unknown since its node is disconnected"
            cluster.touch(alloc)
        elif not alloc.terminal:
            _mark_lost(cluster, job, alloc)
        stop_after = _stop_after_ns(job)
    if stop_after is not None:
        timer = threading.Timer(stop_after / 1e9, _client_stop, (alloc,))
        timer.daemon = True
        timer.start()


def _client_stop(alloc: Alloc) -> None:
    """The cut-off client destroys the allocation (client/heartbeatstop.go, `stopAlloc`)."""
    alloc.client_stopped = True
    if alloc.proc and alloc.proc.poll() is None:
        signal_group(alloc.proc, signal.SIGKILL)


def collect(cluster: Cluster, alloc: Alloc) -> None:
    """The allocation's client garbage-collected it: its directory and logs are gone."""
    with cluster.lock:
        alloc.collected = True
