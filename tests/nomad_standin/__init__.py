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
  `[]` for an unknown job, as Nomad's state query answers; no AllocStates, which only Read
  Allocation carries),
  `DELETE /v1/job/:job_id` (Stop a Job, `purge`).
- Allocations, https://developer.hashicorp.com/nomad/api-docs/allocations:
  `GET /v1/allocation/:alloc_id` (Read Allocation),
  `POST /v1/client/allocation/:alloc_id/signal` (Signal Allocation: `Signal`, `Task`).
- Client, https://developer.hashicorp.com/nomad/api-docs/client:
  `GET /v1/client/fs/logs/:alloc_id` (Stream Logs: `task`, `type`, `origin`, `offset`, `plain`;
  without `follow`, which is all the backend asks for; framed JSON or plain bytes).
- Variables, https://developer.hashicorp.com/nomad/api-docs/variables/variables:
  `PUT|GET|DELETE /v1/var/:var_path` (path rule `^[a-zA-Z0-9-_~/]{1,128}$`; `cas`).
- Status, https://developer.hashicorp.com/nomad/api-docs/status: `GET /v1/status/leader`.
- The job JSON: https://developer.hashicorp.com/nomad/api-docs/json-jobs (Job, TaskGroups,
  Tasks, Env, Meta, Templates, RestartPolicy, ReschedulePolicy, KillSignal, KillTimeout in
  nanoseconds, Resources CPU in MHz / MemoryMB); the template block and its env files,
  https://developer.hashicorp.com/nomad/docs/job-specification/template (`env = true` parses
  KEY=value lines; `toJSON` quotes values), and `nomadVar` from the same page.

Lifecycle of an allocation: placed `placement_delay_s` after register (ClientStatus "pending",
task events Received, Task Setup), then, `task_start_delay_s` later, its template is rendered from
the Nomad Variable (a missing variable keeps it pending, as Nomad's template runner blocks), then
the task's process starts in its own process group with the job's Env plus the template's
variables, and `report_delay_s` later the client tells the servers (ClientStatus "running", event
Started); when it exits: "complete" (exit 0) or "failed", with a Terminated event carrying
ExitCode and Signal (128+N for a signal death, as Nomad's executor reports). Deregister sets
DesiredStatus "stop", sends the task's KillSignal to its process group and SIGKILL after its
KillTimeout (events Killing, Terminated, Killed; ClientStatus "complete").

Nodes lost (`nodes`; scheduler/reconciler/filters.go):
`disconnect()` marks the node down while its task runs on, unheard: a running allocation with
Disconnect.Replace false turns "unknown" and is kept; a pending one (or any, with Replace true)
is "lost" (DesiredStatus stop, an AllocStates entry) and replaced, StopOnClientAfter plus the
longest KillTimeout (at least 5 s) later when the group sets StopOnClientAfter (nomad/structs/
alloc.go `WaitClientStop`), at once otherwise; the cut-off client destroys its allocation after
StopOnClientAfter (client/heartbeatstop.go) and answers neither signals nor log reads (404 "No
path to node"). `lose()` is a node gone for good (collected): the process dies and the
allocation is lost whatever Disconnect says. `collect()` is a client that collected an
allocation (its logs 404 "Unknown allocation"); `break_log_stream()` makes the next log read fail
after its first frame, the error inside the 200 answer as Nomad's HTTP layer writes it.

Namespaces: as Nomad, each request acts in the namespace of its `namespace` query parameter,
`default` without one (a job and a variable sent to different namespaces stay apart, and the job's
template then blocks). Checks of our requests (each refused with a plain-text body: 500 for what
Nomad's Job.Register RPC validates, 4xx for the rest): the ACL token header when one is configured
(403), the `namespace` and `region` query parameters when configured (400: a stand-in check, Nomad
would look elsewhere), a job without TaskGroups or Tasks, an unknown driver, missing driver config,
resources below Nomad's minimums (CPU 1 MHz, MemoryMB 10), an env template with `ChangeMode`
"signal", and any template other than the `nomadVar` env template the backend generates (the
stand-in renders only that shape). Every request is recorded (`requests`) so tests can assert on
what we sent.

Answered as real Nomad answers, though the documentation does not say so (each at the code that
does it, naming the Nomad source file that shows it): an invalid job is HTTP 500 with a plain-text
body (validation errors are un-coded RPC errors); logs of a task that never started are 404;
plain logs are `text/plain` without a charset, framed ones JSON frames; deregistering an unknown
job is 200 with an empty EvalID; signalling a stopped task is 500 "Task not running", and a token
without alloc-lifecycle 403 (`deny`); nodes lost as above; registering an existing ID updates the
job, and `EnforceIndex` with JobModifyIndex 0 refuses it (500 "Enforcing job modify index 0: job
already exists"); a variable over 64 KiB is 400, and `cas=0` on one that exists 409 with it; a
job that fits no node (the one node's datacenter and capacity) completes its evaluation with
FailedTGAllocs and a blocked evaluation (`GET /v1/evaluation/:id`, `GET /v1/job/:id/evaluations`).
`before_next` runs another client's action just before one of our requests is answered.

Not emulated: the scheduler beyond one node (blocked evaluations are never unblocked), blocking
queries, followed logs, `${...}` interpolation of Env values, log rotation, updates of a job that
has allocations, garbage collection beyond `collect()`, a client that reconnects, Nomad's own ACL
policies (one token, all rights but those `deny` takes away).

Where each concern lives: `routes` (the HTTP server, request checks, routing, the test hooks),
`state` (jobs and allocations in Nomad's JSON shapes, the shared index and lock), `scheduler`
(job validation, register/deregister, placement, stop and signal of allocations), `nodes`
(nodes lost, a client's collection), `processes` (the task's real process: environment, start,
exit), `variables` (Nomad Variables and the env template), `logs` (the task's log files).
"""

from tests.nomad_standin.routes import Recorded, StandIn
from tests.nomad_standin.state import Alloc, ApiError, Cluster, Job
from tests.nomad_standin.variables import parse_env_file, parse_env_template

__all__ = [
    "Alloc",
    "ApiError",
    "Cluster",
    "Job",
    "Recorded",
    "StandIn",
    "parse_env_file",
    "parse_env_template",
]
