"""Submitting one attempt's job: its secrets Variable first, then the job, then a short wait for
Nomad's first evaluation, so a bot Nomad cannot place fails at once with Nomad's reason.

Secrets never enter the job: the launch spec's `secret_env` (the bot token, the bot's secrets, a
Redis URL with a password) is written to the Nomad Variable `nomad/jobs/<job_id>` (which the
job's own workload identity may read), and the job's template renders it into the task's
environment. A launch that fails deletes that Variable: no job of the attempt will ever read it.

Both writes only create. Registering a job whose ID exists is an update of that job, and writing
a variable that exists replaces its items; so the variable is written with `cas=0` (set if it
does not exist: nomad/state/state_store_variables.go `varSetCASTxn`; 409 otherwise) and the job
registered with `EnforceIndex` and `JobModifyIndex` 0 (create only, checked again inside the
Raft apply: nomad/structs/job.go `Job.EnforceIndex`, nomad/state/state_store.go
`upsertJobImpl`; refused with "Enforcing job modify index 0: job already exists", an un-coded
error, so HTTP 500). Either refusal fails the launch `name_conflict`, and a variable this launch
did not create is never deleted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import nomad.api.exceptions as nomad_errors

from botfleet.orchestrators.base import (
    BackendUnavailable,
    LaunchFailed,
    OrchestratorError,
    WorkloadNotFound,
)
from botfleet.orchestrators.nomad.api import (
    NomadApi,
    NomadObject,
    answer_text,
    api_errors,
    http_status,
)
from botfleet.orchestrators.nomad.jobspec import variable_path
from botfleet.orchestrators.nomad.placement import SETTLED, placement_failure

log = logging.getLogger(__name__)

#: Seconds between two reads of a launch's evaluation.
_EVAL_POLL_S = 0.1
#: How Nomad's refusal of a create-only register begins (nomad/structs/job.go,
#: RegisterEnforceIndexErrPrefix).
ENFORCE_INDEX_REFUSED = "Enforcing job modify index"


def submit(api: NomadApi, job_id: str, job: dict[str, Any], secrets: dict[str, str]) -> None:
    """Write the secrets, register the job and check its placement; LaunchFailed or
    BackendUnavailable when the attempt cannot run (its secrets are deleted then)."""
    if secrets:
        _write_variable(api, job_id, secrets)
    try:
        answer = _register(api, job_id, job)
        if answer.get("Warnings"):
            log.warning("nomad accepted job %s with warnings: %s", job_id, answer["Warnings"])
        log.info("registered nomad job %s (evaluation %s)", job_id, answer.get("EvalID", ""))
        _check_placement(api, job_id, str(answer.get("EvalID") or ""))
    except OrchestratorError:
        # The launch failed: no job of this attempt will ever run (one registered after
        # all blocks on its missing template and is stopped as an orphan), so its secrets
        # go now; nothing else would ever delete them. Only the variable this launch
        # created: without secrets it created none, and one of this path is another job's.
        if not secrets:
            raise
        try:
            api.delete_variable(job_id)
        except OrchestratorError as exc:
            log.warning("could not delete the variable of job %s: %s", job_id, exc)
        raise


def _register(api: NomadApi, job_id: str, job: dict[str, Any]) -> NomadObject:
    """Register the job, create-only; LaunchFailed(`name_conflict`) when one of its ID exists,
    LaunchFailed(`job_rejected`) when Nomad refused it.

    Nomad answers an invalid job with HTTP 500 and a plain-text body, as it answers an
    outage: validation errors are un-coded RPC errors, which the HTTP layer turns into 500
    (command/agent/http.go, nomad/job_endpoint.go). Reading the job back tells them apart:
    a Nomad that answers and has no such job refused it; one registered after all (an
    answer lost on the way) is launched.
    """
    body = {"Job": job, "EnforceIndex": True, "JobModifyIndex": 0}
    try:
        with api_errors(f"registering job {job_id}"):
            answer: NomadObject = api.client.jobs.register_job(body)
        return answer
    except BackendUnavailable as exc:
        if ENFORCE_INDEX_REFUSED in answer_text(exc):
            raise LaunchFailed(
                f"a Nomad job {job_id!r} exists already: botfleet never updates one",
                code="name_conflict",
            ) from exc
        registered = job_exists(api, job_id)
        if registered:
            log.warning("job %s was registered although Nomad answered: %s", job_id, exc)
            return {}
        if registered is False and http_status(exc) == 500:
            raise LaunchFailed(str(exc), code="job_rejected") from exc
        raise
    except OrchestratorError as exc:  # a 4xx: the HTTP layer's own checks
        raise LaunchFailed(str(exc), code="job_rejected") from exc


def job_exists(api: NomadApi, job_id: str) -> bool | None:
    """Whether Nomad holds the job; None when it cannot be asked."""
    try:
        api.read_job(job_id)
    except WorkloadNotFound:
        return False
    except OrchestratorError:
        return None
    return True


def _check_placement(api: NomadApi, job_id: str, eval_id: str) -> None:
    """Wait (`placement_wait_s`) for the job's first evaluation; a job Nomad could not place
    is purged and the launch fails `no_capacity` with Nomad's reason. An evaluation still
    pending then, or an unanswered read, leaves the bot starting."""
    if not eval_id or api.config.placement_wait_s <= 0:
        return
    deadline = time.monotonic() + api.config.placement_wait_s
    evaluation: NomadObject = {}
    while True:
        try:
            with api_errors(f"reading evaluation {eval_id[:8]} of job {job_id}"):
                evaluation = api.client.evaluation.get_evaluation(eval_id)
        except OrchestratorError as exc:
            log.info("placement of job %s unknown: %s", job_id, exc)
            return
        if evaluation.get("Status") in SETTLED or time.monotonic() >= deadline:
            break
        time.sleep(_EVAL_POLL_S)
    reason = placement_failure(evaluation)
    if reason is None:
        return
    try:
        if api.allocations(job_id):
            return  # placed meanwhile
    except OrchestratorError as exc:
        log.info("placement of job %s unknown: %s", job_id, exc)
        return
    try:
        with api_errors(f"purging the unplaced job {job_id}"):
            api.client.job.deregister_job(job_id, purge=True)
    except OrchestratorError as exc:  # left blocked: stopped later as an orphan
        log.warning("could not purge the unplaced job %s: %s", job_id, exc)
    raise LaunchFailed(reason, code="no_capacity")


def _write_variable(api: NomadApi, job_id: str, secrets: dict[str, str]) -> None:
    """Create the attempt's secrets variable; one that exists is another job's (or a leftover):
    LaunchFailed(`name_conflict`), and it is left as it is. Nomad's 409 answers with the
    variable it found, items included (nomad/variables_endpoint.go,
    `makeVariablesApplyResponse`): never repeated here."""
    path = variable_path(job_id)
    payload = {"Namespace": api.config.namespace, "Path": path, "Items": secrets}
    try:
        with api_errors(f"writing the secrets of job {job_id}"):
            try:
                api.client.variable.create_variable(path, payload, cas=0, **api.namespace())
            except nomad_errors.VariableConflict:
                raise LaunchFailed(
                    f"the Nomad variable {path} exists already (another job's, or a leftover): "
                    "botfleet never overwrites one",
                    code="name_conflict",
                ) from None
    except WorkloadNotFound as exc:  # a 404 here is no missing workload
        raise LaunchFailed(str(exc), code="variable_rejected") from exc
    except (BackendUnavailable, LaunchFailed):
        raise
    except OrchestratorError as exc:
        raise LaunchFailed(str(exc), code="variable_rejected") from exc
