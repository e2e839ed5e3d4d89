"""The stand-in's state: jobs and allocations in Nomad's JSON shapes, and the cluster holding them.

Every concern of the stand-in (scheduler, processes, variables, logs) reads and changes one
`Cluster` under its lock; the Raft-like index is bumped on every change, as Nomad's is.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The stand-in's one client node.
NODE_ID = "5a1f2c3d-0000-4000-8000-standin00001"


class ApiError(Exception):
    """An error answer: Nomad sends a status and a plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def now_ns() -> int:
    return time.time_ns()


def parse_bool(value: str | None, name: str, default: bool = False) -> bool:
    """Go's strconv.ParseBool, which Nomad uses for query flags."""
    if value is None or value == "":
        return default
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ApiError(400, f"Failed to parse value of {name!r} ({value!r}) as a bool")


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A TaskEvent with the documented fields."""
    task_event: dict[str, Any] = {
        "Type": kind,
        "Time": now_ns(),
        "FailsTask": False,
        "RestartReason": "",
        "SetupError": "",
        "DriverError": "",
        "ExitCode": 0,
        "Signal": 0,
        "Message": "",
        "KillTimeout": 0,
        "KillError": "",
        "KillReason": "",
        "StartDelay": 0,
        "DownloadError": "",
        "ValidationError": "",
        "DiskLimit": 0,
        "FailedSibling": "",
        "VaultError": "",
        "TaskSignalReason": "",
        "TaskSignal": "",
        "DriverMessage": "",
        "DisplayMessage": "",
        "Details": {},
    }
    task_event.update(fields)
    return task_event


@dataclass
class Alloc:
    id: str
    job_id: str
    namespace: str
    eval_id: str
    group: str
    task: dict[str, Any]
    dir: Path
    create_index: int
    modify_index: int
    create_time: int = field(default_factory=now_ns)
    modify_time: int = field(default_factory=now_ns)
    desired_status: str = "run"
    desired_description: str = ""
    client_status: str = "pending"
    client_description: str = "No tasks have started"
    task_state: str = "pending"
    failed: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    kill_timer: threading.Timer | None = None
    previous_alloc: str = ""
    next_alloc: str = ""
    #: ClientStatus changes the servers made (lost, unknown), with their time: the full
    #: allocation carries them, a listing's stub does not (nomad/structs/alloc.go AllocState).
    alloc_states: list[dict[str, Any]] = field(default_factory=list)
    #: Its node cannot reach the servers: what the task does is never reported.
    partitioned: bool = False
    #: Its client destroyed it (Disconnect.StopOnClientAfter): it never starts again.
    client_stopped: bool = False
    #: Its client collected it (logs answer 404 "Unknown allocation").
    collected: bool = False
    #: Set by a test: its next log read fails after the first frame with this error text.
    log_error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.client_status in ("complete", "failed", "lost")

    def mark(self, client_status: str) -> None:
        """A ClientStatus the servers set (lost, unknown), recorded with its time."""
        self.client_status = client_status
        self.alloc_states.append({"Field": 0, "Value": client_status, "Time": iso_ns(now_ns())})

    def full(self) -> dict[str, Any]:
        """Read Allocation's answer: the stub plus what only the whole allocation has."""
        return {**self.stub(), "AllocStates": list(self.alloc_states)}

    def stub(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "EvalID": self.eval_id,
            "Name": f"{self.job_id}.{self.group}[0]",
            "Namespace": self.namespace,
            "NodeID": NODE_ID,
            "NodeName": "standin-node",
            "JobID": self.job_id,
            "JobType": "batch",
            "JobVersion": 0,
            "TaskGroup": self.group,
            "DesiredStatus": self.desired_status,
            "DesiredDescription": self.desired_description,
            "ClientStatus": self.client_status,
            "ClientDescription": self.client_description,
            "TaskStates": {
                self.task["Name"]: {
                    "State": self.task_state,
                    "Failed": self.failed,
                    "Restarts": 0,
                    "LastRestart": None,
                    "StartedAt": self.started_at,
                    "FinishedAt": self.finished_at,
                    "Events": list(self.events),
                }
            },
            "FollowupEvalID": "",
            "PreviousAllocation": self.previous_alloc,
            "NextAllocation": self.next_alloc,
            "RescheduleTracker": None,
            "PreemptedAllocations": None,
            "PreemptedByAllocation": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        }


@dataclass
class Job:
    spec: dict[str, Any]
    namespace: str
    create_index: int
    modify_index: int
    submit_time: int = field(default_factory=now_ns)
    #: Bumped by every register of the same ID (an update), as JobModifyIndex is.
    version: int = 0
    job_modify_index: int = 0
    stop: bool = False
    allocs: list[Alloc] = field(default_factory=list)
    placement: threading.Timer | None = None

    @property
    def id(self) -> str:
        return str(self.spec["ID"])

    @property
    def status(self) -> str:
        if any(not a.terminal for a in self.allocs):
            return "running"
        if self.allocs or self.stop:
            return "dead"
        return "pending"

    def summary(self) -> dict[str, Any]:
        group = self.spec["TaskGroups"][0]["Name"]
        counts = dict.fromkeys(
            ("Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown"), 0
        )
        if not self.allocs and not self.stop:
            counts["Queued"] = 1
        names = {"pending": "Starting", "running": "Running", "complete": "Complete"}
        names |= {"failed": "Failed", "lost": "Lost", "unknown": "Unknown"}
        for alloc in self.allocs:
            counts[names[alloc.client_status]] += 1
        return {
            "JobID": self.id,
            "Namespace": self.namespace,
            "Summary": {group: counts},
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def read(self) -> dict[str, Any]:
        return {
            **self.spec,
            "Namespace": self.namespace,
            "Stop": self.stop,
            "Status": self.status,
            "StatusDescription": "",
            "Version": self.version,
            "SubmitTime": self.submit_time,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "JobModifyIndex": self.job_modify_index or self.create_index,
        }

    def list_stub(self, with_meta: bool) -> dict[str, Any]:
        stub = {
            "ID": self.id,
            "ParentID": "",
            "Name": self.spec.get("Name", self.id),
            "Namespace": self.namespace,
            "Datacenters": self.spec.get("Datacenters"),
            "NodePool": "default",
            "Type": self.spec.get("Type", "service"),
            "Priority": self.spec.get("Priority", 50),
            "Periodic": False,
            "ParameterizedJob": False,
            "Stop": self.stop,
            "Status": self.status,
            "StatusDescription": "",
            "JobSummary": self.summary(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "JobModifyIndex": self.job_modify_index or self.create_index,
            "SubmitTime": self.submit_time,
        }
        if with_meta:
            stub["Meta"] = self.spec.get("Meta")
        return stub


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def iso_ns(at_ns: int) -> str:
    """A Go time.Time as Nomad's JSON writes it (RFC 3339, nanoseconds)."""
    seconds, fraction = divmod(at_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


class Cluster:
    """Jobs, allocations and variables of one stand-in, with the index and the lock they share."""

    def __init__(
        self,
        workdir: Path,
        *,
        region: str | None,
        placement_delay_s: float,
        image_command: list[str] | None,
        datacenter: str = "dc1",
        cpu_mhz: int = 100_000,
        memory_mb: int = 262_144,
        task_start_delay_s: float = 0.1,
        report_delay_s: float = 0.0,
    ) -> None:
        self.workdir = workdir
        #: How long the client takes from placement to starting the task, and from starting
        #: it to telling the servers (the allocation reads "pending" meanwhile).
        self.task_start_delay_s = task_start_delay_s
        self.report_delay_s = report_delay_s
        self.region = region
        #: The one node's datacenter and capacity (what the scheduler places against).
        self.datacenter = datacenter
        self.cpu_mhz = cpu_mhz
        self.memory_mb = memory_mb
        #: ACL capabilities the token lacks (e.g. "alloc-lifecycle"): those calls answer 403.
        self.denied: set[str] = set()
        self.placement_delay_s = placement_delay_s
        #: What a docker task runs here, in place of its image.
        self.image_command = image_command or [sys.executable, "-m", "botfleet.runtime"]
        self.jobs: dict[tuple[str, str], Job] = {}
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}
        self.allocs: dict[str, Alloc] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.index = 1
        self.lock = threading.RLock()

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def denies(self, capability: str) -> bool:
        return capability in self.denied

    def used_resources(self) -> tuple[int, int]:
        """CPU MHz and MemoryMB of the allocations the node runs (or is about to)."""
        cpu = mem = 0
        for alloc in self.allocs.values():
            if alloc.client_status in ("pending", "running"):
                resources = alloc.task.get("Resources") or {}
                cpu += resources.get("CPU", 100)
                mem += resources.get("MemoryMB", 300)
        return cpu, mem

    def touch(self, alloc: Alloc) -> None:
        alloc.modify_index = self.next_index()
        alloc.modify_time = now_ns()

    def get_job(self, ns: str, job_id: str) -> Job:
        job = self.jobs.get((ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    def get_alloc(self, alloc_id: str) -> Alloc:
        alloc = self.allocs.get(alloc_id)
        if alloc is None:
            raise ApiError(404, f"Unknown allocation {alloc_id!r}")
        return alloc
