"""The `nomad` backend: `backend` (the Orchestrator: launch, stop, watch), `submit` (the secrets
Variable, the job, its placement), `api` (python-nomad's client per thread, its errors in our
vocabulary), `jobspec` (the job JSON, Meta keys, the secrets Variable's path), `status` (Nomad's
states in the shared vocabulary), `placement` (why Nomad could not place a job) and `logs` (tails
and followers of the task's output); `config` holds its settings (`BOTFLEET_NOMAD_*`)."""

from botfleet.orchestrators.nomad.backend import NomadOrchestrator
from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import TASK, meta_key, variable_path
from botfleet.orchestrators.nomad.status import alloc_status, job_status

__all__ = [
    "TASK",
    "NomadOrchestrator",
    "NomadOrchestratorConfig",
    "alloc_status",
    "job_status",
    "meta_key",
    "variable_path",
]
