"""Scheduling: jobs registered and deregistered, their one allocation placed, stopped, signalled.

One node in one datacenter with a CPU and memory capacity. Each register creates an evaluation
that is settled `placement_delay_s` later: the allocation placed (ClientStatus "pending";
`processes` then runs its task), or, when no node fits, the evaluation completes with
`FailedTGAllocs` and a `BlockedEval` (blocked evaluations are never unblocked here).
"""

from __future__ import annotations

import fnmatch
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


def invalid(message: str) -> ApiError:
    """A job validation error as real Nomad answers it: HTTP 500, plain text. Validation runs
    in the Job.Register RPC (nomad/job_endpoint.go, nomad/job_endpoint_hooks.go) and returns a
    multierror without an HTTP code, which the HTTP layer answers with 500
    (command/agent/http.go, `wrap`)."""
    return ApiError(500, f"1 error occurred:\n\t* {message}\n\n")


def validate(cluster: Cluster, ns: str, job: Any) -> None:
    """Refuse what Nomad refuses (500, see `invalid`; 400 where the HTTP layer checks, as
    command/agent/job_endpoint.go does) and what the stand-in cannot run (400, "stand-in:")."""
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    if not job.get("ID"):
        raise ApiError(400, "Job ID hasn't been provided")
    if " " in str(job["ID"]):
        raise invalid("Job ID contains a space")
    if job.get("Type") not in ("service", "batch", "system", "sysbatch"):
        raise invalid(f"Invalid job type: {job.get('Type')!r}")
    if job.get("Namespace", ns) != ns:
        raise ApiError(500, "mismatched request namespace in request")
    if cluster.region and job.get("Region") not in (None, cluster.region):
        raise ApiError(400, f"job region {job.get('Region')!r} is not {cluster.region!r}")
    if not job.get("Datacenters"):
        raise invalid("Missing job datacenters")
    meta = job.get("Meta") or {}
    if not all(isinstance(v, str) for v in meta.values()):
        raise ApiError(400, "stand-in: job Meta values must be strings")
    groups = job.get("TaskGroups")
    if not groups:
        raise invalid("Missing job task groups")
    if len(groups) != 1 or groups[0].get("Count", 1) != 1:
        raise ApiError(400, "stand-in: exactly one task group of count 1")
    tasks = groups[0].get("Tasks")
    if not groups[0].get("Name") or not tasks or len(tasks) != 1:
        raise invalid("Task group validation failed: Missing tasks for task group")
    task = tasks[0]
    if not task.get("Name"):
        raise invalid("Task group bot validation failed: Missing task name")
    driver = task.get("Driver")
    config = task.get("Config") or {}
    if driver not in DRIVERS:
        raise ApiError(400, f"stand-in: driver {driver!r} is not one of {DRIVERS}")
    if driver == "docker" and not config.get("image"):
        raise invalid("Task bot validation failed: docker driver: image is required")
    if driver != "docker" and not config.get("command"):
        raise invalid(f"Task bot validation failed: {driver} driver: command is required")
    resources = task.get("Resources") or {}
    if resources.get("CPU", 100) < 1:
        raise invalid("Task bot validation failed: minimum CPU value is 1")
    if resources.get("MemoryMB", 300) < 10:
        raise invalid("Task bot validation failed: minimum MemoryMB value is 10")
    env = task.get("Env") or {}
    if not all(isinstance(v, str) for v in env.values()):
        raise ApiError(400, "stand-in: task Env values must be strings")
    disconnect = groups[0].get("Disconnect") or {}
    if disconnect.get("StopOnClientAfter") is not None and disconnect.get("LostAfter"):
        # nomad/structs/group.go, DisconnectStrategy.Validate
        raise invalid("Disconnect cannot be configured with both lost_after and stop_after")
    for template in task.get("Templates") or []:
        if not template.get("DestPath"):
            raise invalid("Template 1 validation failed: Must specify a destination")
        if template.get("Envvars") and template.get("ChangeMode") == "signal":
            raise invalid("Template 1 validation failed: cannot use signals with env var templates")
        parse_env_template(template.get("EmbeddedTmpl", ""))


def register(cluster: Cluster, ns: str, body: Any) -> dict[str, Any]:
    """Create Job: answered at once; the allocation is placed later, asynchronously. A job whose
    ID exists is updated (a new version), unless `EnforceIndex` refuses it (`enforce_index`)."""
    body = body or {}
    spec = body.get("Job")
    validate(cluster, ns, spec)
    with cluster.lock:
        existing = cluster.jobs.get((ns, spec["ID"]))
        if body.get("EnforceIndex"):
            enforce_index(existing, int(body.get("JobModifyIndex") or 0))
        index = cluster.next_index()
        if existing is not None:
            job = _update(existing, spec, index)
        else:
            job = Job(spec=spec, namespace=ns, create_index=index, modify_index=index)
            job.job_modify_index = index
            cluster.jobs[(ns, job.id)] = job
        eval_id = new_eval(cluster, job, "job-register")
        job.placement = threading.Timer(cluster.placement_delay_s, place, (cluster, job, eval_id))
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


def enforce_index(existing: Job | None, index: int) -> None:
    """Register's check-and-set (nomad/structs/job.go, `Job.EnforceIndex`, checked again in
    the Raft apply: nomad/state/state_store.go `upsertJobImpl`): JobModifyIndex 0 creates
    only. Its errors carry no HTTP code, so the HTTP layer answers 500 with their text
    (command/agent/http.go, `wrap`)."""
    prefix = "Enforcing job modify index"  # structs.RegisterEnforceIndexErrPrefix
    if existing is not None:
        if index == 0:
            raise ApiError(500, f"{prefix} 0: job already exists")
        if index != existing.job_modify_index:
            raise ApiError(
                500,
                f"{prefix} {index}: job exists with conflicting job modify index: "
                f"{existing.job_modify_index}",
            )
    elif index != 0:
        raise ApiError(500, f"{prefix} {index}: job does not exist")


def _update(job: Job, spec: dict[str, Any], index: int) -> Job:
    """Caller holds the lock. Registering an existing ID updates that job: a new version, placed
    anew (nomad/job_endpoint.go `Register`). Only a job with no allocation yet is emulated."""
    if job.allocs:
        raise ApiError(400, "stand-in: updates of a job with allocations are not emulated")
    if job.placement:
        job.placement.cancel()
    job.spec, job.stop = spec, False
    job.version += 1
    job.modify_index = job.job_modify_index = index
    return job


def deregister(cluster: Cluster, ns: str, job_id: str, purge: bool) -> dict[str, Any]:
    """Stop a Job: every allocation is stopped; `purge` forgets the job too. An unknown job
    answers 200 with an empty EvalID, as Job.Deregister returns nil when there is no job
    (nomad/job_endpoint.go)."""
    with cluster.lock:
        job = cluster.jobs.get((ns, job_id))
        if job is None:
            return {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "Index": 0}
        job.stop = True
        if job.placement:
            job.placement.cancel()
        index = cluster.next_index()
        job.modify_index = index
        for alloc in job.allocs:
            stop_alloc(cluster, alloc)
        for evaluation in cluster.evals.values():  # a blocked evaluation goes with its job
            if evaluation["JobID"] == job_id and evaluation["Status"] == "blocked":
                evaluation["Status"] = "canceled"
        if purge:
            del cluster.jobs[(ns, job_id)]
            for alloc in job.allocs:
                cluster.allocs.pop(alloc.id, None)
        return {
            "EvalID": new_eval(cluster, job, "job-deregister", status="complete"),
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Index": index,
            "LastContact": 0,
            "KnownLeader": True,
        }


# ---- allocations -------------------------------------------------------------------------


def new_eval(cluster: Cluster, job: Job, trigger: str, *, status: str = "pending") -> str:
    """Caller holds the lock. An evaluation of the job (api/evaluations.go's fields we read)."""
    eval_id = str(uuid.uuid4())
    index = cluster.next_index()
    cluster.evals[eval_id] = {
        "ID": eval_id,
        "Namespace": job.namespace,
        "JobID": job.id,
        "Type": job.spec.get("Type", "service"),
        "TriggeredBy": trigger,
        "Status": status,
        "StatusDescription": "",
        "FailedTGAllocs": None,
        "BlockedEval": "",
        "PreviousEval": "",
        "CreateIndex": index,
        "ModifyIndex": index,
    }
    return eval_id


def _fits(cluster: Cluster, job: Job) -> dict[str, Any] | None:
    """Caller holds the lock. None when the node takes the job's task, else the AllocMetric of
    the failed placement (nomad/structs/structs.go, AllocMetric)."""
    patterns = job.spec.get("Datacenters") or []
    if not any(fnmatch.fnmatchcase(cluster.datacenter, p) for p in patterns):
        # No node in the job's datacenters: none is even evaluated.
        return {
            "NodesEvaluated": 0,
            "NodesFiltered": 0,
            "NodesInPool": 1,
            "NodesAvailable": dict.fromkeys(patterns, 0),
            "NodesExhausted": 0,
        }
    task = job.spec["TaskGroups"][0]["Tasks"][0]
    want = task.get("Resources") or {}
    used_cpu, used_mem = cluster.used_resources()
    exhausted = {}
    if used_cpu + want.get("CPU", 100) > cluster.cpu_mhz:
        exhausted["cpu"] = 1
    if used_mem + want.get("MemoryMB", 300) > cluster.memory_mb:
        exhausted["memory"] = 1
    if not exhausted:
        return None
    return {
        "NodesEvaluated": 1,
        "NodesFiltered": 0,
        "NodesInPool": 1,
        "NodesAvailable": {cluster.datacenter: 1},
        "NodesExhausted": 1,
        "DimensionExhausted": exhausted,
    }


def place(cluster: Cluster, job: Job, eval_id: str, previous: Alloc | None = None) -> None:
    """Settle the evaluation: place the job's allocation on the one node (its task starts a
    little later), or, when it does not fit, complete the evaluation with FailedTGAllocs and a
    blocked evaluation, as the scheduler does (scheduler/generic_sched.go)."""
    with cluster.lock:
        if job.stop or cluster.jobs.get((job.namespace, job.id)) is not job:
            return
        group = job.spec["TaskGroups"][0]
        evaluation = cluster.evals.get(eval_id)
        failure = _fits(cluster, job)
        if failure is not None:
            blocked = new_eval(cluster, job, "queued-allocs", status="blocked")
            cluster.evals[blocked]["PreviousEval"] = eval_id
            if evaluation is not None:
                evaluation.update(
                    Status="complete",
                    FailedTGAllocs={group["Name"]: failure},
                    BlockedEval=blocked,
                    ModifyIndex=cluster.next_index(),
                )
            return
        if evaluation is not None:
            evaluation.update(Status="complete", ModifyIndex=cluster.next_index())
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
            previous_alloc=previous.id if previous else "",
        )
        alloc.events.append(event("Received", DisplayMessage="Task received by client"))
        job.allocs.append(alloc)
        cluster.allocs[alloc_id] = alloc
        if previous is not None:
            previous.next_alloc = alloc_id
    # The client sets the task up, renders templates, then starts it: a little later.
    timer = threading.Timer(cluster.task_start_delay_s, run_task, (cluster, job, alloc))
    timer.daemon = True
    timer.start()


def stop_alloc(cluster: Cluster, alloc: Alloc) -> None:
    """Caller holds the lock. DesiredStatus stop; the client kills the task."""
    if alloc.terminal:
        return
    alloc.desired_status = "stop"
    alloc.desired_description = "alloc not needed due to job update"
    cluster.touch(alloc)
    if alloc.partitioned:  # its client never hears of it
        return
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
        if cluster.denies("alloc-lifecycle"):
            # client/alloc_endpoint.go, Allocations.Signal: a token without alloc-lifecycle
            raise ApiError(403, "Permission denied")
        if alloc.partitioned:
            # No server holds a connection to its node: ErrNoNodeConn, answered 404
            # (nomad/client_rpc.go `findNodeConnAndForward`, command/agent/alloc_endpoint.go)
            raise ApiError(404, "No path to node")
        if alloc.proc is None or alloc.proc.poll() is not None:
            # The task runner's ErrTaskNotRunning, un-coded: HTTP 500 (client/alloc_endpoint.go,
            # command/agent/http.go)
            name = alloc.task["Name"]
            raise ApiError(500, f"Failed to signal task: {name}, err: Task not running")
        message = f"Task being sent signal {sig.name}"
        alloc.events.append(event("Signaling", TaskSignal=sig.name, DisplayMessage=message))
        cluster.touch(alloc)
        signal_group(alloc.proc, sig)
        return {}


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
