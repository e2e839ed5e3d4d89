"""The nomad backend: one Nomad batch job per bot attempt, through python-nomad.

Each attempt is a job `<job_prefix><bot_id>-<attempt>` (the runtime_ref), built by
`jobspec.build_job`. Secrets never enter the job: the launch spec's `secret_env` (the bot token,
the bot's secrets, a Redis URL with a password) is written first to the Nomad Variable
`nomad/jobs/<job_id>` (which the job's own workload identity may read), and a template renders
it into the task's environment. The variable is deleted when the ended job is purged (`remove`).

Stop is the runtime's leave (sent by the manager), then the shared stop ladder
(orchestrators/stopping.py): a deregister (Nomad sends the task SIGTERM and kills it after
KillTimeout, the manager's stop grace), then SIGKILL to the allocation if it still runs after the
caller's grace. The job stays readable (exit code, logs) until `remove` purges it.

Nomad's HTTP API: https://developer.hashicorp.com/nomad/api-docs (jobs, allocations, client,
variables). A transport error or a 5xx is BackendUnavailable, never "not found".

python-nomad blocks; the manager calls every method here from worker threads. Each thread gets its
own client (python-nomad keeps requests sessions that are not meant to be shared across threads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import nomad
import nomad.api.exceptions as nomad_errors
import requests

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    BackendUnavailable,
    CapabilityNotSupported,
    LaunchFailed,
    LaunchSpec,
    LogFollower,
    Orchestrator,
    OrchestratorError,
    StateRef,
    Workload,
    WorkloadNotFound,
    WorkloadState,
    WorkloadStatus,
)
from botfleet.orchestrators.log_tail import tail_text
from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import (
    STATE_MOUNT,
    TASK,
    build_job,
    is_valid_variable_path,
    labels_of,
    meta_key,
    state_volume,
    variable_path,
)
from botfleet.orchestrators.nomad.logs import STREAMS, TaskLogFollower, last_lines, read_capped
from botfleet.orchestrators.nomad.placement import SETTLED, blocked_reason, placement_failure
from botfleet.orchestrators.nomad.status import (
    extra_copies,
    first_alloc,
    is_live,
    job_status,
    summary_status,
)
from botfleet.orchestrators.stopping import Engine, poll_until_gone, stop_workload

log = logging.getLogger(__name__)

_NOT_FOUND = WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such nomad job")
#: Seconds between two reads of a launch's evaluation.
_EVAL_POLL_S = 0.1


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of the Nomad answer behind an error raised by `_nomad_errors`; None for
    a transport error (nothing answered)."""
    cause = exc.__cause__
    resp = getattr(cause, "nomad_resp", None)
    return resp.status_code if isinstance(resp, requests.Response) else None


def _response_text(exc: nomad_errors.BaseNomadException) -> str:
    resp = exc.nomad_resp
    if isinstance(resp, requests.Response):
        return f"HTTP {resp.status_code}: {resp.text.strip()[:300]}"
    return str(resp)


@contextmanager
def _nomad_errors(what: str) -> Iterator[None]:
    """Nomad's answers in our vocabulary; a transport error is never "not found"."""
    try:
        yield
    except nomad_errors.URLNotFoundNomadException as exc:
        raise WorkloadNotFound(f"{what}: {_response_text(exc)}") from exc
    except nomad_errors.URLNotAuthorizedNomadException as exc:
        raise BackendUnavailable(
            f"{what}: the ACL token was refused ({_response_text(exc)})"
        ) from exc
    except nomad_errors.BadRequestNomadException as exc:
        raise OrchestratorError(f"{what}: {_response_text(exc)}") from exc
    except nomad_errors.BaseNomadException as exc:
        resp = exc.nomad_resp
        if (
            isinstance(resp, requests.Response)
            and resp.status_code < 500
            and resp.status_code != 429
        ):
            raise OrchestratorError(f"{what}: {_response_text(exc)}") from exc
        raise BackendUnavailable(f"{what}: Nomad does not answer ({_response_text(exc)})") from exc
    except requests.RequestException as exc:  # includes TimeoutNomadException
        raise BackendUnavailable(f"{what}: Nomad does not answer ({exc})") from exc
    except ValueError as exc:  # a body that is not JSON: not Nomad, or a broken proxy
        raise BackendUnavailable(f"{what}: unexpected answer ({exc})") from exc


class SignalRefused(BackendUnavailable):
    """The ACL token may not signal allocations (it lacks alloc-lifecycle)."""


class ConflictingNomadEnvironment(OrchestratorError):
    """A NOMAD_* variable python-nomad would read silently, with no botfleet setting to win."""


#: python-nomad falls back to these when its argument is empty; botfleet passes the namespace
#: and the address explicitly (so NOMAD_NAMESPACE / NOMAD_ADDR never apply), but it cannot pass
#: "no token", "no region" or "no client certificate": those variables must not be set alone.
_SILENT_FALLBACKS = {
    "NOMAD_TOKEN": ("token", "BOTFLEET_NOMAD_TOKEN"),
    "NOMAD_REGION": ("region", "BOTFLEET_NOMAD_REGION"),
}


def _refuse_silent_environment(cfg: NomadOrchestratorConfig, environ: Mapping[str, str]) -> None:
    """Refuse to start when a NOMAD_* variable would change what botfleet does behind its
    settings' back (python-nomad reads them silently); warn about the ones that are ignored."""
    for variable, (field, setting) in _SILENT_FALLBACKS.items():
        if environ.get(variable) and not getattr(cfg, field):
            raise ConflictingNomadEnvironment(
                f"{variable} is set in the manager's environment but {setting} is not: the "
                f"Nomad client would use it silently. Set {setting} (to the same value, if "
                f"meant) or unset {variable}."
            )
    if environ.get("NOMAD_CLIENT_CERT") and environ.get("NOMAD_CLIENT_KEY"):
        raise ConflictingNomadEnvironment(
            "NOMAD_CLIENT_CERT/NOMAD_CLIENT_KEY are set in the manager's environment: the Nomad "
            "client would present that certificate silently. Unset them."
        )
    for variable, value in (("NOMAD_NAMESPACE", cfg.namespace), ("NOMAD_ADDR", cfg.address)):
        if environ.get(variable) and environ[variable].rstrip("/") != value.rstrip("/"):
            log.warning("%s=%s is ignored: botfleet uses %s", variable, environ[variable], value)


class NomadOrchestrator(Orchestrator):
    name: ClassVar[str] = "nomad"
    config_class: ClassVar[type[NomadOrchestratorConfig]] = NomadOrchestratorConfig

    def __init__(self, config: NomadOrchestratorConfig | None = None) -> None:
        self.config = config or NomadOrchestratorConfig()
        _refuse_silent_environment(self.config, os.environ)
        self._local = threading.local()

    @property
    def client(self) -> nomad.Nomad:
        """This thread's client, made on first use (a manager starts while Nomad is down)."""
        client: nomad.Nomad | None = getattr(self._local, "client", None)
        if client is None:
            cfg = self.config
            client = nomad.Nomad(
                address=cfg.address.rstrip("/"),
                token=cfg.token,
                namespace=cfg.namespace,
                region=cfg.region,
                timeout=cfg.api_timeout_s,  # type: ignore[arg-type]
                verify=cfg.ca_cert or True,  # type: ignore[arg-type]
            )
            self._local.client = client
        return client

    def _ns(self) -> dict[str, str]:
        """The namespace query parameter, for endpoints python-nomad does not add it to (var)."""
        return {"namespace": self.config.namespace}

    # ---- launch ------------------------------------------------------------------------------

    def state_dir(self, state: StateRef) -> str:
        """A Docker named volume on the client node (docker driver only): it survives the
        bot's restarts and relaunches placed on the same node, not the node's loss."""
        if self.config.driver != "docker":
            raise CapabilityNotSupported(
                "state_key needs the Nomad docker driver "
                f"(BOTFLEET_NOMAD_DRIVER={self.config.driver})"
            )
        return STATE_MOUNT

    def purge_state(self, state: StateRef) -> None:
        raise CapabilityNotSupported(
            f"Nomad cannot delete volumes on its clients: remove the Docker volume "
            f"{state_volume(state.slug)} on the nodes the bot ran on"
        )

    def job_id(self, spec: LaunchSpec) -> str:
        return f"{self.config.job_prefix}{spec.bot_id}-{spec.attempt}"

    def job_spec(
        self, spec: LaunchSpec, *, secret_names: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The job of this attempt; `secret_names` defaults to the spec's `secret_env`."""
        names = spec.secret_env.keys() if secret_names is None else secret_names
        return build_job(self.config, spec, job_id=self.job_id(spec), secret_names=names)

    def launch(self, spec: LaunchSpec) -> str:
        job_id = self.job_id(spec)
        if not is_valid_variable_path(variable_path(job_id)):
            raise LaunchFailed(f"job id {job_id!r} cannot name a Nomad variable", code="bad_id")
        try:
            self._read_job(job_id)
        except WorkloadNotFound:
            pass
        else:
            raise LaunchFailed(f"a Nomad job {job_id!r} exists already", code="name_conflict")
        if spec.secret_env:
            self._write_variable(job_id, dict(spec.secret_env))
        try:
            answer = self._register(job_id, self.job_spec(spec))
            if answer.get("Warnings"):
                log.warning("nomad accepted job %s with warnings: %s", job_id, answer["Warnings"])
            log.info("registered nomad job %s (evaluation %s)", job_id, answer.get("EvalID", ""))
            self._check_placement(job_id, str(answer.get("EvalID") or ""))
        except OrchestratorError:
            # The launch failed: no job of this attempt will ever run (one registered after
            # all blocks on its missing template and is stopped as an orphan), so its secrets
            # go now; nothing else would ever delete them.
            self._discard_variable(job_id)
            raise
        return job_id

    def _register(self, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        """Register the job; LaunchFailed(`job_rejected`) when Nomad refused it.

        Nomad answers an invalid job with HTTP 500 and a plain-text body, as it answers an
        outage: validation errors are un-coded RPC errors, which the HTTP layer turns into 500
        (command/agent/http.go, nomad/job_endpoint.go). Reading the job back tells them apart:
        a Nomad that answers and has no such job refused it; one registered after all (an
        answer lost on the way) is launched.
        """
        try:
            with _nomad_errors(f"registering job {job_id}"):
                return self.client.jobs.register_job({"Job": job})  # type: ignore[no-any-return]
        except BackendUnavailable as exc:
            registered = self._job_exists(job_id)
            if registered:
                log.warning("job %s was registered although Nomad answered: %s", job_id, exc)
                return {}
            if registered is False and _http_status(exc) == 500:
                raise LaunchFailed(str(exc), code="job_rejected") from exc
            raise
        except OrchestratorError as exc:  # a 4xx: the HTTP layer's own checks
            raise LaunchFailed(str(exc), code="job_rejected") from exc

    def _job_exists(self, job_id: str) -> bool | None:
        """Whether Nomad holds the job; None when it cannot be asked."""
        try:
            self._read_job(job_id)
        except WorkloadNotFound:
            return False
        except OrchestratorError:
            return None
        return True

    def _check_placement(self, job_id: str, eval_id: str) -> None:
        """Wait (`placement_wait_s`) for the job's first evaluation; a job Nomad could not place
        is purged and the launch fails `no_capacity` with Nomad's reason. An evaluation still
        pending then, or an unanswered read, leaves the bot starting."""
        if not eval_id or self.config.placement_wait_s <= 0:
            return
        deadline = time.monotonic() + self.config.placement_wait_s
        evaluation: dict[str, Any] = {}
        while True:
            try:
                with _nomad_errors(f"reading evaluation {eval_id[:8]} of job {job_id}"):
                    evaluation = self.client.evaluation.get_evaluation(eval_id)
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
            if self._allocations(job_id):
                return  # placed meanwhile
        except OrchestratorError as exc:
            log.info("placement of job %s unknown: %s", job_id, exc)
            return
        try:
            with _nomad_errors(f"purging the unplaced job {job_id}"):
                self.client.job.deregister_job(job_id, purge=True)
        except OrchestratorError as exc:  # left blocked: stopped later as an orphan
            log.warning("could not purge the unplaced job %s: %s", job_id, exc)
        raise LaunchFailed(reason, code="no_capacity")

    def _write_variable(self, job_id: str, secrets: dict[str, str]) -> None:
        path = variable_path(job_id)
        payload = {"Namespace": self.config.namespace, "Path": path, "Items": secrets}
        try:
            with _nomad_errors(f"writing the secrets of job {job_id}"):
                self.client.variable.create_variable(path, payload, **self._ns())
        except WorkloadNotFound as exc:  # a 404 here is no missing workload
            raise LaunchFailed(str(exc), code="variable_rejected") from exc
        except BackendUnavailable:
            raise
        except OrchestratorError as exc:
            raise LaunchFailed(str(exc), code="variable_rejected") from exc

    def _discard_variable(self, job_id: str) -> None:
        try:
            self._delete_variable(job_id)
        except OrchestratorError as exc:
            log.warning("could not delete the variable of job %s: %s", job_id, exc)

    def _delete_variable(self, job_id: str) -> None:
        try:
            with _nomad_errors(f"deleting the variable of job {job_id}"):
                self.client.variable.delete_variable(variable_path(job_id), **self._ns())
        except WorkloadNotFound:
            pass

    # ---- watch -------------------------------------------------------------------------------

    def _read_job(self, job_id: str) -> dict[str, Any]:
        with _nomad_errors(f"reading job {job_id}"):
            return self.client.job.get_job(job_id)  # type: ignore[no-any-return]

    def _allocations(self, job_id: str) -> list[dict[str, Any]]:
        with _nomad_errors(f"reading the allocations of job {job_id}"):
            return self.client.job.get_allocations(job_id) or []

    def _status(self, job_id: str) -> tuple[WorkloadStatus, list[dict[str, Any]]]:
        """The job's status; a second live copy of the bot is killed on sight (see
        `_kill_extra_copies`), and a job without allocations says why, when Nomad said."""
        try:
            job = self._read_job(job_id)
            allocs = self._allocations(job_id)
            blocked = None if allocs else self._blocked_reason(job_id)
        except WorkloadNotFound:
            return _NOT_FOUND, []
        self._kill_extra_copies(job_id, allocs)
        return job_status(job, allocs, blocked=blocked), allocs

    def _blocked_reason(self, job_id: str) -> str | None:
        """Why Nomad has not placed the job, from its evaluations (None: it did not say)."""
        try:
            with _nomad_errors(f"reading the evaluations of job {job_id}"):
                evaluations = self.client.job.get_evaluations(job_id) or []
        except WorkloadNotFound:
            raise
        except OrchestratorError as exc:
            log.info("evaluations of job %s: %s", job_id, exc)
            return None
        return blocked_reason(evaluations)

    def _kill_extra_copies(self, job_id: str, allocs: list[dict[str, Any]]) -> None:
        """A job is one copy of one bot: its first allocation. Another live one (Nomad replaced
        a lost node's allocation, or an operator's `nomad alloc stop` rescheduled it) runs the
        same bot with the same token, so it is killed; the first speaks for the job. The
        reconciler's listing each tick finds it: a job whose summary shows more than one
        allocation is inspected (`summary_status`)."""
        for extra in extra_copies(allocs):
            log.warning("job %s: allocation %s is a second copy of the bot; killing it",
                        job_id, str(extra["ID"])[:8])  # fmt: skip
            try:
                self._signal(str(extra["ID"]), "SIGKILL")
            except OrchestratorError as exc:
                log.warning("could not kill the second copy of job %s: %s", job_id, exc)

    def _signal(self, alloc_id: str, signal: str) -> None:
        """Signal the task; a refused token says which capability it lacks."""
        try:
            with _nomad_errors(f"sending {signal} to allocation {alloc_id[:8]}"):
                self.client.client.allocation.signal_allocation(alloc_id, signal, task=TASK)
        except BackendUnavailable as exc:
            if _http_status(exc) == 403:
                raise SignalRefused(
                    f"{exc}: the ACL token needs the alloc-lifecycle capability to signal a bot"
                ) from exc
            raise

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        return self._status(runtime_ref)[0]

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """The shared ladder: deregister (SIGTERM), SIGKILL to live allocations after `grace_s`."""
        allocs: list[dict[str, Any]] = []

        def terminate() -> WorkloadStatus | None:
            try:
                with _nomad_errors(f"stopping job {runtime_ref}"):
                    self.client.job.deregister_job(runtime_ref)
            except WorkloadNotFound:
                return _NOT_FOUND
            return None

        def inspect_keeping_allocs() -> WorkloadStatus:
            status, allocs[:] = self._status(runtime_ref)
            return status

        def kill() -> None:
            for alloc in filter(is_live, allocs):
                try:
                    self._signal(str(alloc["ID"]), "SIGKILL")
                except SignalRefused:
                    raise  # the bot would live until Nomad's KillTimeout, unexplained
                except OrchestratorError as exc:  # it ended meanwhile ("Task not running")
                    log.info("SIGKILL to job %s: %s", runtime_ref, exc)

        engine = Engine(
            inspect=partial(self.inspect, runtime_ref),
            terminate=terminate,
            kill=kill,
            wait_gone=partial(poll_until_gone, inspect_keeping_allocs),
        )
        return stop_workload(engine, grace_s=grace_s, kill_wait_s=self.config.kill_wait_s)

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        wanted = {meta_key(k): v for k, v in {LABEL_MANAGED: "true", **(labels or {})}.items()}
        with _nomad_errors("listing jobs"):
            stubs = self.client.jobs.get_jobs(prefix=self.config.job_prefix, meta=True) or []
        workloads = []
        for stub in stubs:
            job_id = stub.get("ID", "")
            try:
                meta = stub["Meta"] if "Meta" in stub else self._read_job(job_id).get("Meta")
                meta = meta or {}
                if any(meta.get(k) != v for k, v in wanted.items()):
                    continue
                status = summary_status(stub) or self.inspect(job_id)
            except WorkloadNotFound:  # purged meanwhile
                continue
            if status.state == WorkloadState.NOT_FOUND:
                continue
            workloads.append(
                Workload(job_id, meta.get(meta_key(LABEL_BOT_ID), ""), labels_of(meta), status)
            )
        return workloads

    def remove(self, runtime_ref: str) -> None:
        """Delete the secrets variable, then purge the ended job (so no secret outlives it)."""
        status = self.inspect(runtime_ref)
        if not status.is_gone:
            raise OrchestratorError(f"job {runtime_ref} still runs; stop it first")
        self._delete_variable(runtime_ref)
        if status.state == WorkloadState.NOT_FOUND:
            return
        try:
            with _nomad_errors(f"purging job {runtime_ref}"):
                self.client.job.deregister_job(runtime_ref, purge=True)
        except WorkloadNotFound:
            pass

    # ---- capabilities ------------------------------------------------------------------------

    @property
    def runtime_image(self) -> str | None:
        # Only the docker driver runs an image; exec/raw_exec run a command and ignore it.
        return self.config.default_image if self.config.driver == "docker" else None

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The newest allocation's stdout, then its stderr (Nomad keeps them apart); last lines.

        WorkloadNotFound once the job was purged.
        """
        if tail <= 0:
            return ""
        alloc_id = self._first_alloc_id(runtime_ref)
        if alloc_id is None:
            return ""
        window = self._log_window()
        windows = []
        for stream in STREAMS:
            try:
                data = self._read_log(alloc_id, stream, "end", window, window)
            except WorkloadNotFound:
                # Nomad answers 404 for a task that never started (a driver failure, an image
                # that cannot be pulled) and for an allocation its client collected
                # (client/fs_endpoint.go): no output, not a missing job.
                data = b""
            windows.append((data, len(data) < window))  # else cut mid-line by the byte offset
        return tail_text(last_lines(windows, tail), tail=tail, limits=self.config.log_limits())

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """Polls Stream Logs from byte offsets (orchestrators/nomad/logs.py): a `follow=true`
        stream would hold a thread for the stream's whole life."""
        return TaskLogFollower.open(
            self._read_log,
            find_alloc=partial(self._first_alloc_id, runtime_ref),
            limits=self.config.log_limits(),
            tail=tail,
            window=self._log_window(),
        )

    def _log_window(self) -> int:
        """The bytes read from the end of each stream for a tail."""
        return min(self.config.logs_tail_bytes, self.config.log_tail_max_bytes)

    def _first_alloc_id(self, runtime_ref: str) -> str | None:
        """The job's allocation (its first: `status.first_alloc`); None before one is placed,
        WorkloadNotFound once the job is gone."""
        allocs = self._allocations(runtime_ref)
        if not allocs:
            self._read_job(runtime_ref)  # raises WorkloadNotFound when the job is gone
            return None
        return str(first_alloc(allocs)["ID"])

    def _read_log(self, alloc_id: str, stream: str, origin: str, offset: int, limit: int) -> bytes:
        """At most `limit` bytes of the task's `stream` (see `read_capped`)."""
        with _nomad_errors(f"reading the {stream} of allocation {alloc_id[:8]}"):
            return read_capped(
                self.client.client.stream_logs,
                alloc_id,
                TASK,
                stream,
                origin=origin,
                offset=offset,
                limit=limit,
            )

    def check_health(self) -> None:
        with _nomad_errors("asking Nomad for its leader"):
            leader = self.client.status.leader.get_leader()
        if not leader:
            raise BackendUnavailable("Nomad has no leader")

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
