"""A stand-in for the slice of Nomad's HTTP API that the nomad backend uses.

Nomad cannot run here, so this HTTP server (stdlib only, on a free loopback port, in a thread)
answers the documented endpoints with Nomad's JSON shapes and asynchronous behaviour, and runs
each allocation's task as a REAL local process: the bot runtime, so the end-to-end suite passes
through it. It checks OUR requests and exercises OUR handling of Nomad's answers; it is not Nomad
and proves nothing about Nomad itself.

Endpoints (shapes from Nomad's documentation):

- Jobs, https://developer.hashicorp.com/nomad/api-docs/jobs:
  `GET /v1/jobs` (List Jobs: `prefix`, `meta`; JobListStub with JobSummary),
  `POST /v1/jobs` (Create Job: answers `EvalID`, `EvalCreateIndex`, `JobModifyIndex`, `Warnings`,
  `Index`, `LastContact`, `KnownLeader`; the allocation is placed later, asynchronously),
  `GET /v1/job/:job_id` (Read Job; 404 when unknown),
  `GET /v1/job/:job_id/allocations` (List Job Allocations: AllocationListStub with TaskStates;
  `[]` for an unknown job, as Nomad's state query answers),
  `DELETE /v1/job/:job_id` (Stop a Job, `purge`).
- Allocations, https://developer.hashicorp.com/nomad/api-docs/allocations:
  `GET /v1/allocation/:alloc_id` (Read Allocation),
  `POST /v1/client/allocation/:alloc_id/signal` (Signal Allocation: `Signal`, `Task`).
- Client, https://developer.hashicorp.com/nomad/api-docs/client:
  `GET /v1/client/fs/logs/:alloc_id` (Stream Logs: `task`, `type`, `origin`, `offset`; only
  `plain=true` without `follow`, which is all the backend asks for).
- Variables, https://developer.hashicorp.com/nomad/api-docs/variables/variables:
  `PUT|GET|DELETE /v1/var/:var_path` (path rule `^[a-zA-Z0-9-_~/]{1,128}$`).
- Status, https://developer.hashicorp.com/nomad/api-docs/status: `GET /v1/status/leader`.
- The job JSON: https://developer.hashicorp.com/nomad/api-docs/json-jobs (Job, TaskGroups,
  Tasks, Env, Meta, Templates, RestartPolicy, ReschedulePolicy, KillSignal, KillTimeout in
  nanoseconds, Resources CPU in MHz / MemoryMB); the template block and its env files,
  https://developer.hashicorp.com/nomad/docs/job-specification/template (`env = true` parses
  KEY=value lines; `toJSON` quotes values), and `nomadVar` from the same page.

Lifecycle of an allocation: placed `placement_delay_s` after register (ClientStatus "pending",
task events Received, Task Setup), then its template is rendered from the Nomad Variable (a
missing variable keeps it pending, as Nomad's template runner blocks), then the task's process
starts in its own process group with the job's Env plus the template's variables (ClientStatus
"running", event Started); when it exits: "complete" (exit 0) or "failed", with a Terminated
event carrying ExitCode and Signal (128+N for a signal death, as Nomad's executor reports).
Deregister sets DesiredStatus "stop", sends the task's KillSignal to its process group and
SIGKILL after its KillTimeout (events Killing, Terminated, Killed; ClientStatus "complete").
`lose()` makes an allocation "lost" (its process killed, as when a node goes away).

Checks of our requests (each refused with a 4xx text body, as Nomad answers errors): the ACL
token header when one is configured (403), the `namespace` and `region` query parameters when
configured (400: a stand-in check, Nomad would look elsewhere), a job without TaskGroups or
Tasks, an unknown driver, missing driver config, resources below Nomad's minimums (CPU 1 MHz,
MemoryMB 10), an env template with `ChangeMode` "signal", and any template other than the
`nomadVar` env template the backend generates (the stand-in renders only that shape). Every
request is recorded (`requests`) so tests can assert on what we sent.

Not emulated: evaluations and the scheduler (no placement failures, one node), blocking queries,
framed (non-plain) or followed logs, `${...}` interpolation of Env values, log rotation, job
versions and updates, garbage collection, Nomad's own ACL policies (one token, all rights).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")  # the client agent's env a task sees
DRIVERS = ("docker", "exec", "raw_exec")
VAR_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")
_TEMPLATE_OPEN = re.compile(r'^\{\{ with nomadVar "([^"]+)" \}\}$')
_TEMPLATE_LINE = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*)=\{\{ \.([A-Za-z_][A-Za-z0-9_]*) \| toJSON \}\}$"
)
_NAMESPACED = ("/v1/jobs", "/v1/job/", "/v1/allocation", "/v1/client/", "/v1/var/")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _now_ns() -> int:
    return time.time_ns()


def _parse_bool(value: str | None, name: str, default: bool = False) -> bool:
    """Go's strconv.ParseBool, which Nomad uses for query flags."""
    if value is None or value == "":
        return default
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ApiError(400, f"Failed to parse value of {name!r} ({value!r}) as a bool")


def parse_env_template(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(variable path, [(env name, item key)]) of the one template shape we render."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[-1] != "{{ end }}" or not _TEMPLATE_OPEN.match(lines[0]):
        raise ApiError(400, "stand-in: only the botfleet nomadVar env template can be rendered")
    path = _TEMPLATE_OPEN.match(lines[0]).group(1)  # type: ignore[union-attr]
    pairs = []
    for line in lines[1:-1]:
        match = _TEMPLATE_LINE.match(line)
        if not match:
            raise ApiError(400, f"stand-in: cannot render template line {line!r}")
        pairs.append((match.group(1), match.group(2)))
    return path, pairs


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as Nomad reads an env template (go-envparse); double quotes are JSON."""
    env = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith('"'):
            value = json.loads(value)
        env[key.strip()] = value
    return env


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    """A TaskEvent with the documented fields."""
    event: dict[str, Any] = {
        "Type": kind,
        "Time": _now_ns(),
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
    event.update(fields)
    return event


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
    create_time: int = field(default_factory=_now_ns)
    modify_time: int = field(default_factory=_now_ns)
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

    @property
    def terminal(self) -> bool:
        return self.client_status in ("complete", "failed", "lost")

    def stub(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "EvalID": self.eval_id,
            "Name": f"{self.job_id}.{self.group}[0]",
            "Namespace": self.namespace,
            "NodeID": StandIn.NODE_ID,
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
    submit_time: int = field(default_factory=_now_ns)
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
        counts = dict.fromkeys(("Queued", "Complete", "Failed", "Running", "Starting", "Lost"), 0)
        if not self.allocs and not self.stop:
            counts["Queued"] = 1
        names = {"pending": "Starting", "running": "Running", "complete": "Complete"}
        names |= {"failed": "Failed", "lost": "Lost"}
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
            "Version": 0,
            "SubmitTime": self.submit_time,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "JobModifyIndex": self.create_index,
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
            "JobModifyIndex": self.create_index,
            "SubmitTime": self.submit_time,
        }
        if with_meta:
            stub["Meta"] = self.spec.get("Meta")
        return stub


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: str = ""


class StandIn:
    """The server; `start()` it, `stop()` it (kills every task process)."""

    NODE_ID = "5a1f2c3d-0000-4000-8000-standin00001"

    def __init__(
        self,
        workdir: Path,
        *,
        token: str | None = None,
        namespace: str | None = None,
        region: str | None = None,
        placement_delay_s: float = 0.3,
        image_command: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.token = token
        self.namespace = namespace
        self.region = region
        self.placement_delay_s = placement_delay_s
        #: What a docker task runs here, in place of its image.
        self.image_command = image_command or [sys.executable, "-m", "bot_runtime"]
        #: When set, every request is answered with this status (e.g. 500): an outage.
        self.fail_with: int | None = None
        self.requests: list[Recorded] = []
        self.jobs: dict[tuple[str, str], Job] = {}
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}
        self._allocs: dict[str, Alloc] = {}
        self._index = 1
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # ---- server ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StandIn:
        self.workdir.mkdir(parents=True, exist_ok=True)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                standin._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down and kill every task process still running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            allocs = list(self._allocs.values())
            for job in self.jobs.values():
                if job.placement:
                    job.placement.cancel()
        for alloc in allocs:
            if alloc.kill_timer:
                alloc.kill_timer.cancel()
            if alloc.proc and alloc.proc.poll() is None:
                _signal_group(alloc.proc, signal.SIGKILL)
                alloc.proc.wait(10)

    # ---- test hooks --------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get((self._ns_or_default(), job_id))

    def variable(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            return self.variables.get((self._ns_or_default(), path))

    def alloc_of(self, job_id: str) -> Alloc | None:
        job = self.job(job_id)
        return job.allocs[-1] if job and job.allocs else None

    def lose(self, job_id: str) -> None:
        """The node running the job's allocation went away: the process dies, the alloc is lost."""
        alloc = self.alloc_of(job_id)
        assert alloc is not None, f"job {job_id} has no allocation"
        with self._lock:
            alloc.client_status = "lost"
            alloc.client_description = "alloc is lost since its node is down"
            alloc.task_state = "dead"
            alloc.finished_at = _iso_now()
            self._touch(alloc)
        if alloc.proc and alloc.proc.poll() is None:
            _signal_group(alloc.proc, signal.SIGKILL)

    def requests_to(self, method: str, path_prefix: str) -> list[Recorded]:
        with self._lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def _ns_or_default(self) -> str:
        return self.namespace or "default"

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    def _touch(self, alloc: Alloc) -> None:
        alloc.modify_index = self._next_index()
        alloc.modify_time = _now_ns()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = Recorded(handler.command, path, query, dict(handler.headers.items()), None)
        status, content_type, body = 200, "application/json", ""
        try:
            if raw:
                try:
                    record.body = json.loads(raw)
                except ValueError as exc:
                    raise ApiError(400, f"failed to decode request body: {exc}") from exc
            if self.fail_with is not None:
                raise ApiError(self.fail_with, "stand-in: simulated failure")
            self._check_request(handler.command, path, query, handler.headers.get("X-Nomad-Token"))
            result = self._route(handler.command, path, query, record.body)
            if isinstance(result, bytes):
                content_type, body = "text/plain; charset=utf-8", result.decode(errors="replace")
            else:
                body = json.dumps(result)
        except ApiError as exc:
            status, content_type, body = exc.status, "text/plain; charset=utf-8", str(exc)
        record.status, record.answer = status, body
        with self._lock:
            self.requests.append(record)
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-Nomad-Index", str(self._index))
        handler.send_header("X-Nomad-KnownLeader", "true")
        handler.send_header("X-Nomad-LastContact", "0")
        handler.end_headers()
        handler.wfile.write(data)

    def _check_request(
        self, method: str, path: str, query: dict[str, str], token: str | None
    ) -> None:
        if self.token is not None and path != "/v1/status/leader" and token != self.token:
            raise ApiError(403, "Permission denied")
        if (
            self.namespace
            and path.startswith(_NAMESPACED)
            and query.get("namespace") != self.namespace
        ):
            raise ApiError(400, f"stand-in: request without namespace={self.namespace}")
        if self.region and query.get("region") != self.region:
            raise ApiError(400, f"stand-in: request without region={self.region}")

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        ns = self._ns_or_default()
        if (method, path) == ("GET", "/v1/status/leader"):
            return "127.0.0.1:4647"
        if path == "/v1/jobs":
            if method == "GET":
                return self._list_jobs(ns, query)
            if method == "POST":
                return self._register(ns, body)
        if match := re.fullmatch(r"/v1/job/([^/]+)/allocations", path):
            if method == "GET":
                with self._lock:
                    job = self.jobs.get((ns, match.group(1)))
                    return [a.stub() for a in job.allocs] if job else []
        elif match := re.fullmatch(r"/v1/job/([^/]+)", path):
            if method == "GET":
                with self._lock:
                    return self._get_job(ns, match.group(1)).read()
            if method == "DELETE":
                return self._deregister(
                    ns, match.group(1), _parse_bool(query.get("purge"), "purge")
                )
        elif match := re.fullmatch(r"/v1/allocation/([^/]+)", path):
            if method == "GET":
                with self._lock:
                    alloc = self._get_alloc(match.group(1))
                    job = self.jobs.get((alloc.namespace, alloc.job_id))
                    return {**alloc.stub(), "Job": job.read() if job else None}
        elif match := re.fullmatch(r"/v1/client/allocation/([^/]+)/signal", path):
            if method == "POST":
                return self._signal(match.group(1), body or {})
        elif match := re.fullmatch(r"/v1/client/fs/logs/([^/]+)", path):
            if method == "GET":
                return self._logs(match.group(1), query)
        elif match := re.fullmatch(r"/v1/var/(.+)", path):
            return self._variable(method, ns, match.group(1), body)
        raise ApiError(404, f"stand-in: no route for {method} {path}")

    # ---- jobs --------------------------------------------------------------------------------

    def _get_job(self, ns: str, job_id: str) -> Job:
        job = self.jobs.get((ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    def _list_jobs(self, ns: str, query: dict[str, str]) -> list[dict[str, Any]]:
        prefix = query.get("prefix", "")
        with_meta = _parse_bool(query.get("meta"), "meta")
        with self._lock:
            return [
                job.list_stub(with_meta)
                for (job_ns, job_id), job in sorted(self.jobs.items())
                if job_ns == ns and job_id.startswith(prefix)
            ]

    def _validate(self, ns: str, job: Any) -> None:
        if not isinstance(job, dict):
            raise ApiError(400, "Job must be specified")
        if not job.get("ID") or " " in str(job["ID"]):
            raise ApiError(400, "1 error occurred:\n\t* Missing job ID or it contains a space")
        if job.get("Type") not in ("service", "batch", "system", "sysbatch"):
            raise ApiError(400, f"Invalid job type: {job.get('Type')!r}")
        if job.get("Namespace", ns) != ns:
            raise ApiError(400, "mismatched request namespace")
        if self.region and job.get("Region") not in (None, self.region):
            raise ApiError(400, f"job region {job.get('Region')!r} is not {self.region!r}")
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

    def _register(self, ns: str, body: Any) -> dict[str, Any]:
        spec = (body or {}).get("Job")
        self._validate(ns, spec)
        with self._lock:
            existing = self.jobs.get((ns, spec["ID"]))
            if existing is not None and existing.allocs:
                raise ApiError(400, "stand-in: job updates are not emulated")
            index = self._next_index()
            job = Job(spec=spec, namespace=ns, create_index=index, modify_index=index)
            self.jobs[(ns, job.id)] = job
            eval_id = str(uuid.uuid4())
            job.placement = threading.Timer(self.placement_delay_s, self._place, (job, eval_id))
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

    def _deregister(self, ns: str, job_id: str, purge: bool) -> dict[str, Any]:
        with self._lock:
            job = self._get_job(ns, job_id)
            job.stop = True
            if job.placement:
                job.placement.cancel()
            index = self._next_index()
            job.modify_index = index
            for alloc in job.allocs:
                self._stop_alloc(alloc)
            if purge:
                del self.jobs[(ns, job_id)]
                for alloc in job.allocs:
                    self._allocs.pop(alloc.id, None)
            return {
                "EvalID": str(uuid.uuid4()),
                "EvalCreateIndex": index,
                "JobModifyIndex": index,
                "Index": index,
                "LastContact": 0,
                "KnownLeader": True,
            }

    # ---- allocations -------------------------------------------------------------------------

    def _get_alloc(self, alloc_id: str) -> Alloc:
        alloc = self._allocs.get(alloc_id)
        if alloc is None:
            raise ApiError(404, f"Unknown allocation {alloc_id!r}")
        return alloc

    def _place(self, job: Job, eval_id: str) -> None:
        with self._lock:
            if job.stop or self.jobs.get((job.namespace, job.id)) is not job:
                return
            group = job.spec["TaskGroups"][0]
            alloc_id = str(uuid.uuid4())
            index = self._next_index()
            alloc = Alloc(
                id=alloc_id,
                job_id=job.id,
                namespace=job.namespace,
                eval_id=eval_id,
                group=group["Name"],
                task=group["Tasks"][0],
                dir=self.workdir / alloc_id,
                create_index=index,
                modify_index=index,
            )
            alloc.events.append(_event("Received", DisplayMessage="Task received by client"))
            job.allocs.append(alloc)
            self._allocs[alloc_id] = alloc
        # The client sets the task up, renders templates, then starts it: a little later.
        timer = threading.Timer(0.1, self._run, (job, alloc))
        timer.daemon = True
        timer.start()

    def _run(self, job: Job, alloc: Alloc) -> None:
        task = alloc.task
        task_dir = alloc.dir / task["Name"]
        logs_dir = alloc.dir / "alloc" / "logs"
        for sub in (logs_dir, task_dir / "local", task_dir / "secrets", task_dir / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if alloc.desired_status == "stop" or alloc.terminal:
                return
            alloc.events.append(_event("Task Setup", Message="Building Task Directory"))
            self._touch(alloc)
            try:
                template_env = self._render_templates(alloc, task_dir)
            except LookupError as exc:  # Nomad's template runner blocks until the data exists
                alloc.events.append(_event("Template", DisplayMessage=f"Missing: {exc}"))
                return
            env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
            env |= self._nomad_env(job, alloc, task_dir)
            env |= dict(task.get("Env") or {})
            env |= template_env
            if task["Driver"] == "docker":
                command = list(self.image_command)
            else:
                config = task["Config"]
                command = [config["command"], *config.get("args", [])]
            name = task["Name"]
            try:
                with (
                    (logs_dir / f"{name}.stdout.0").open("ab") as out,
                    (logs_dir / f"{name}.stderr.0").open("ab") as err,
                ):
                    alloc.proc = subprocess.Popen(
                        command,
                        env=env,
                        cwd=task_dir,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
            except OSError as exc:
                alloc.events.append(
                    _event(
                        "Driver Failure",
                        FailsTask=True,
                        DriverError=str(exc),
                        DisplayMessage=f"failed to launch command: {exc}",
                    )
                )
                alloc.client_status, alloc.task_state, alloc.failed = "failed", "dead", True
                alloc.client_description = "Failed tasks"
                alloc.finished_at = _iso_now()
                self._touch(alloc)
                return
            alloc.events.append(_event("Started", DisplayMessage="Task started by client"))
            alloc.client_status, alloc.task_state = "running", "running"
            alloc.client_description = "Tasks are running"
            alloc.started_at = _iso_now()
            self._touch(alloc)
        threading.Thread(target=self._watch, args=(alloc,), daemon=True).start()

    def _render_templates(self, alloc: Alloc, task_dir: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        for template in alloc.task.get("Templates") or []:
            path, pairs = parse_env_template(template["EmbeddedTmpl"])
            variable = self.variables.get((alloc.namespace, path))
            if variable is None:
                raise LookupError(f"nomad.var.block({path}@{alloc.namespace}.global)")
            items = variable["Items"]
            text = "".join(f"{name}={json.dumps(items[key])}\n" for name, key in pairs)
            dest = task_dir / template["DestPath"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            dest.chmod(int(template.get("Perms") or "0644", 8))
            if template.get("Envvars"):
                env |= parse_env_file(text)
        return env

    def _nomad_env(self, job: Job, alloc: Alloc, task_dir: Path) -> dict[str, str]:
        resources = alloc.task.get("Resources") or {}
        env = {
            "NOMAD_ALLOC_ID": alloc.id,
            "NOMAD_ALLOC_NAME": f"{job.id}.{alloc.group}[0]",
            "NOMAD_ALLOC_INDEX": "0",
            "NOMAD_ALLOC_DIR": str(alloc.dir / "alloc"),
            "NOMAD_TASK_DIR": str(task_dir / "local"),
            "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
            "NOMAD_TASK_NAME": alloc.task["Name"],
            "NOMAD_GROUP_NAME": alloc.group,
            "NOMAD_JOB_ID": job.id,
            "NOMAD_JOB_NAME": job.spec.get("Name", job.id),
            "NOMAD_NAMESPACE": job.namespace,
            "NOMAD_REGION": self.region or "global",
            "NOMAD_DC": job.spec["Datacenters"][0],
            "NOMAD_CPU_LIMIT": str(resources.get("CPU", 100)),
            "NOMAD_MEMORY_LIMIT": str(resources.get("MemoryMB", 300)),
        }
        env |= {f"NOMAD_META_{k}": v for k, v in (job.spec.get("Meta") or {}).items()}
        return env

    def _watch(self, alloc: Alloc) -> None:
        assert alloc.proc is not None
        returncode = alloc.proc.wait()
        with self._lock:
            if alloc.kill_timer:
                alloc.kill_timer.cancel()
            if alloc.client_status == "lost":
                return
            sig = -returncode if returncode < 0 else 0
            code = 128 + sig if sig else returncode
            alloc.events.append(
                _event(
                    "Terminated",
                    ExitCode=code,
                    Signal=sig,
                    DisplayMessage=f"Exit Code: {code}" + (f", Signal: {sig}" if sig else ""),
                )
            )
            stopping = alloc.desired_status == "stop"
            if stopping:
                alloc.events.append(_event("Killed", DisplayMessage="Task successfully killed"))
            alloc.task_state = "dead"
            alloc.finished_at = _iso_now()
            alloc.failed = code != 0 and not stopping
            if stopping or code == 0:
                alloc.client_status, alloc.client_description = (
                    "complete",
                    "All tasks have completed",
                )
            else:
                alloc.client_status, alloc.client_description = "failed", "Failed tasks"
            self._touch(alloc)

    def _stop_alloc(self, alloc: Alloc) -> None:
        """Caller holds the lock. DesiredStatus stop; the client kills the task."""
        if alloc.terminal:
            return
        alloc.desired_status = "stop"
        alloc.desired_description = "alloc not needed due to job update"
        self._touch(alloc)
        proc = alloc.proc
        if proc is None:  # not started yet
            alloc.client_status, alloc.task_state = "complete", "dead"
            alloc.client_description = "All tasks have completed"
            alloc.finished_at = _iso_now()
            return
        timeout_s = int(alloc.task.get("KillTimeout") or 5_000_000_000) / 1e9
        alloc.events.append(
            _event(
                "Killing",
                KillTimeout=int(timeout_s * 1e9),
                DisplayMessage=f"Sent interrupt. Waiting {timeout_s:g}s before force killing",
            )
        )
        kill_signal = getattr(signal, alloc.task.get("KillSignal") or "SIGINT")
        _signal_group(proc, kill_signal)
        alloc.kill_timer = threading.Timer(timeout_s, _signal_group, (proc, signal.SIGKILL))
        alloc.kill_timer.daemon = True
        alloc.kill_timer.start()

    def _signal(self, alloc_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            alloc = self._get_alloc(alloc_id)
            if body.get("Task") not in (None, alloc.task["Name"]):
                raise ApiError(400, f"Failed to signal task: {body.get('Task')}, err: unknown task")
            try:
                sig = signal.Signals[body.get("Signal") or "SIGKILL"]
            except KeyError:
                raise ApiError(400, f"unsupported signal {body.get('Signal')!r}") from None
            if alloc.proc is None or alloc.proc.poll() is not None:
                raise ApiError(400, "Task not running")
            message = f"Task being sent signal {sig.name}"
            alloc.events.append(_event("Signaling", TaskSignal=sig.name, DisplayMessage=message))
            self._touch(alloc)
            _signal_group(alloc.proc, sig)
            return {}

    def _logs(self, alloc_id: str, query: dict[str, str]) -> bytes:
        with self._lock:
            alloc = self._get_alloc(alloc_id)
        task = query.get("task")
        if not task:
            raise ApiError(400, "must provide task name")
        if task != alloc.task["Name"]:
            raise ApiError(400, f"unknown task name {task!r}")
        kind = query.get("type")
        if kind not in ("stdout", "stderr"):
            raise ApiError(400, "must provide log type (stdout/stderr)")
        if not _parse_bool(query.get("plain"), "plain") or _parse_bool(
            query.get("follow"), "follow"
        ):
            raise ApiError(400, "stand-in: only plain=true without follow is emulated")
        origin = query.get("origin") or "start"
        if origin not in ("start", "end"):
            raise ApiError(400, 'origin must be "start" or "end"')
        try:
            offset = int(query.get("offset") or 0)
        except ValueError:
            raise ApiError(400, "failed to parse offset") from None
        path = alloc.dir / "alloc" / "logs" / f"{task}.{kind}.0"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return b""
        start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
        return data[start:]

    # ---- variables ---------------------------------------------------------------------------

    def _variable(self, method: str, ns: str, path: str, body: Any) -> dict[str, Any]:
        if not VAR_PATH.match(path):
            raise ApiError(400, f"invalid path {path!r}")
        key = (ns, path)
        with self._lock:
            current = self.variables.get(key)
            if method == "GET":
                if current is None:
                    raise ApiError(404, "variable not found")
                return current
            if method == "DELETE":
                self.variables.pop(key, None)
                return {"Index": self._next_index()}
            if method == "PUT":
                body = body or {}
                if body.get("Path", path) != path:
                    raise ApiError(400, "variable path in the body does not match the URL")
                if body.get("Namespace", ns) != ns:
                    raise ApiError(400, "variable namespace in the body does not match")
                items = body.get("Items")
                if not items or not all(isinstance(v, str) for v in items.values()):
                    raise ApiError(400, "variable missing Items (strings)")
                index, now = self._next_index(), _now_ns()
                variable = {
                    "Namespace": ns,
                    "Path": path,
                    "CreateIndex": current["CreateIndex"] if current else index,
                    "ModifyIndex": index,
                    "CreateTime": current["CreateTime"] if current else now,
                    "ModifyTime": now,
                    "Items": dict(items),
                }
                self.variables[key] = variable
                return variable
        raise ApiError(405, f"method {method} not allowed")

    def cleanup(self) -> None:
        """Remove the allocation directories (logs, rendered secrets)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is not None:  # reaped: its pid may belong to someone else now
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
