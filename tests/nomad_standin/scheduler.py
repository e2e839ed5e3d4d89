"""Scheduling: jobs registered and deregistered, their one allocation placed, stopped, signalled.

No evaluations and no real scheduler: one node, no placement failures. An allocation is placed
`placement_delay_s` after register (ClientStatus "pending"); `processes` then runs its task.
"""

from __future__ import annotations

import signal
import threading
import uuid
from typing import Any

from tests.nomad_standin.processes import run_task, signal_group
from tests.nomad_standin.state import Alloc, ApiError, Cluster, Job, event, iso_now, parse_bool
from tests.nomad_standin.variables import parse_env_template

DRIVERS = ("docker", "exec", "raw_exec")


def list_jobs(cluster: Cluster, ns: str, query: dict[str, str]) -> list[dict[str, Any]]:
    """List Jobs: `prefix` and `meta` (the Meta of each job in its stub)."""
    prefix = query.get("prefix", "")
    with_meta = parse_bool(query.get("meta"), "meta")
    with cluster.lock:
        return [
            job.list_stub(with_meta)
            for (job_ns, job_id), job in sorted(cluster.jobs.items())
            if job_ns == ns and job_id.startswith(prefix)
        ]


def validate(cluster: Cluster, ns: str, job: Any) -> None:
    """Refuse what Nomad refuses (and what the stand-in cannot run) with a 400."""
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    if not job.get("ID") or " " in str(job["ID"]):
        raise ApiError(400, "1 error occurred:\n\t* Missing job ID or it contains a space")
    if job.get("Type") not in ("service", "batch", "system", "sysbatch"):
        raise ApiError(400, f"Invalid job type: {job.get('Type')!r}")
    if job.get("Namespace", ns) != ns:
        raise ApiError(400, "mismatched request namespace")
    if cluster.region and job.get("Region") not in (None, cluster.region):
        raise ApiError(400, f"job region {job.get('Region')!r} is not {cluster.region!r}")
    if not job.get("Datacenters"):
        raise ApiError(400, "Missing job datacenters")
    meta = job.get("Meta") or {}
    if not all(isinstance(v, str) for v in meta.values()):
        raise ApiError(400, "job Meta values must be strings")
    groups = job.get("TaskGroups")
    if not groups:
        raise ApiError(400, "Missing job task groups")
    if len(groups) != 1 or groups[0].get("Count", 1) != 1:
        raise ApiError(400, "stand-in: exactly one task group of count 1")
    tasks = groups[0].get("Tasks")
    if not groups[0].get("Name") or not tasks or len(tasks) != 1:
        raise ApiError(400, "Missing tasks for task group (stand-in: exactly one)")
    task = tasks[0]
    if not task.get("Name"):
        raise ApiError(400, "Missing task name")
    driver = task.get("Driver")
    config = task.get("Config") or {}
    if driver not in DRIVERS:
        raise ApiError(400, f"stand-in: driver {driver!r} is not one of {DRIVERS}")
    if driver == "docker" and not config.get("image"):
        raise ApiError(400, "docker driver: image is required")
    if driver != "docker" and not config.get("command"):
        raise ApiError(400, f"{driver} driver: command is required")
    resources = task.get("Resources") or {}
    if resources.get("CPU", 100) < 1:
        raise ApiError(400, "minimum CPU value is 1")
    if resources.get("MemoryMB", 300) < 10:
        raise ApiError(400, "minimum MemoryMB value is 10")
    env = task.get("Env") or {}
    if not all(isinstance(v, str) for v in env.values()):
        raise ApiError(400, "task Env values must be strings")
    for template in task.get("Templates") or []:
        if not template.get("DestPath"):
            raise ApiError(400, "Must specify a destination for the template")
        if template.get("Envvars") and template.get("ChangeMode") == "signal":
            raise ApiError(400, "cannot use signals with env var templates")
        parse_env_template(template.get("EmbeddedTmpl", ""))


def register(cluster: Cluster, ns: str, body: Any) -> dict[str, Any]:
    """Create Job: answered at once; the allocation is placed later, asynchronously."""
    spec = (body or {}).get("Job")
    validate(cluster, ns, spec)
    with cluster.lock:
        existing = cluster.jobs.get((ns, spec["ID"]))
        if existing is not None and existing.allocs:
            raise ApiError(400, "stand-in: job updates are not emulated")
        index = cluster.next_index()
        job = Job(spec=spec, namespace=ns, create_index=index, modify_index=index)
        cluster.jobs[(ns, job.id)] = job
        eval_id = str(uuid.uuid4())
        job.placement = threading.Timer(cluster.placement_delay_s, _place, (cluster, job, eval_id))
        job.placement.daemon = True
        job.placement.start()
        return {
            "EvalID": eval_id,
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Warnings": "",
            "Index": index,
            "LastContact": 0,
            "KnownLeader": True,
        }


def deregister(cluster: Cluster, ns: str, job_id: str, purge: bool) -> dict[str, Any]:
    """Stop a Job: every allocation is stopped; `purge` forgets the job too."""
    with cluster.lock:
        job = cluster.get_job(ns, job_id)
        job.stop = True
        if job.placement:
            job.placement.cancel()
        index = cluster.next_index()
        job.modify_index = index
        for alloc in job.allocs:
            stop_alloc(cluster, alloc)
        if purge:
            del cluster.jobs[(ns, job_id)]
            for alloc in job.allocs:
                cluster.allocs.pop(alloc.id, None)
        return {
            "EvalID": str(uuid.uuid4()),
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Index": index,
            "LastContact": 0,
            "KnownLeader": True,
        }


# ---- allocations -------------------------------------------------------------------------


def _place(cluster: Cluster, job: Job, eval_id: str) -> None:
    """Place the job's one allocation on the one node; its task starts a little later."""
    with cluster.lock:
        if job.stop or cluster.jobs.get((job.namespace, job.id)) is not job:
            return
        group = job.spec["TaskGroups"][0]
        alloc_id = str(uuid.uuid4())
        index = cluster.next_index()
        alloc = Alloc(
            id=alloc_id,
            job_id=job.id,
            namespace=job.namespace,
            eval_id=eval_id,
            group=group["Name"],
            task=group["Tasks"][0],
            dir=cluster.workdir / alloc_id,
            create_index=index,
            modify_index=index,
        )
        alloc.events.append(event("Received", DisplayMessage="Task received by client"))
        job.allocs.append(alloc)
        cluster.allocs[alloc_id] = alloc
    # The client sets the task up, renders templates, then starts it: a little later.
    timer = threading.Timer(0.1, run_task, (cluster, job, alloc))
    timer.daemon = True
    timer.start()


def stop_alloc(cluster: Cluster, alloc: Alloc) -> None:
    """Caller holds the lock. DesiredStatus stop; the client kills the task."""
    if alloc.terminal:
        return
    alloc.desired_status = "stop"
    alloc.desired_description = "alloc not needed due to job update"
    cluster.touch(alloc)
    proc = alloc.proc
    if proc is None:  # not started yet
        alloc.client_status, alloc.task_state = "complete", "dead"
        alloc.client_description = "All tasks have completed"
        alloc.finished_at = iso_now()
        return
    timeout_s = int(alloc.task.get("KillTimeout") or 5_000_000_000) / 1e9
    alloc.events.append(
        event(
            "Killing",
            KillTimeout=int(timeout_s * 1e9),
            DisplayMessage=f"Sent interrupt. Waiting {timeout_s:g}s before force killing",
        )
    )
    kill_signal = getattr(signal, alloc.task.get("KillSignal") or "SIGINT")
    signal_group(proc, kill_signal)
    alloc.kill_timer = threading.Timer(timeout_s, signal_group, (proc, signal.SIGKILL))
    alloc.kill_timer.daemon = True
    alloc.kill_timer.start()


def signal_alloc(cluster: Cluster, alloc_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Signal Allocation: send `Signal` to the task's process group."""
    with cluster.lock:
        alloc = cluster.get_alloc(alloc_id)
        if body.get("Task") not in (None, alloc.task["Name"]):
            raise ApiError(400, f"Failed to signal task: {body.get('Task')}, err: unknown task")
        try:
            sig = signal.Signals[body.get("Signal") or "SIGKILL"]
        except KeyError:
            raise ApiError(400, f"unsupported signal {body.get('Signal')!r}") from None
        if alloc.proc is None or alloc.proc.poll() is not None:
            raise ApiError(400, "Task not running")
        message = f"Task being sent signal {sig.name}"
        alloc.events.append(event("Signaling", TaskSignal=sig.name, DisplayMessage=message))
        cluster.touch(alloc)
        signal_group(alloc.proc, sig)
        return {}


def lose(cluster: Cluster, alloc: Alloc) -> None:
    """The node running the allocation went away: the process dies, the alloc is lost."""
    with cluster.lock:
        alloc.client_status = "lost"
        alloc.client_description = "alloc is lost since its node is down"
        alloc.task_state = "dead"
        alloc.finished_at = iso_now()
        cluster.touch(alloc)
    if alloc.proc and alloc.proc.poll() is None:
        signal_group(alloc.proc, signal.SIGKILL)


def shut_down(cluster: Cluster) -> None:
    """Cancel every pending placement and kill every task process still running."""
    with cluster.lock:
        allocs = list(cluster.allocs.values())
        for job in cluster.jobs.values():
            if job.placement:
                job.placement.cancel()
    for alloc in allocs:
        if alloc.kill_timer:
            alloc.kill_timer.cancel()
        if alloc.proc and alloc.proc.poll() is None:
            signal_group(alloc.proc, signal.SIGKILL)
            alloc.proc.wait(10)
