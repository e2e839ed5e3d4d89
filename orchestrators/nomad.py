"""The `nomad` backend: one Nomad batch job per bot attempt, through python-nomad.

Each attempt is a job `<job_prefix><bot_id>-<attempt>` (the runtime_ref) with one task group and
one task, `bot`, on the `docker` driver (the runtime image) or on `exec` / `raw_exec` (a command).
Nomad never restarts or reschedules it (RestartPolicy Attempts 0 Mode "fail", ReschedulePolicy
Attempts 0): botfleet owns restarts. The job's Meta names botfleet, the bot, the user and the
attempt; Meta never holds an environment value.

Secrets never enter the job: the bot token, the bot's secrets and a Redis URL with a password are
written first to the Nomad Variable `nomad/jobs/<job_id>` (which the job's own workload identity
may read), and a template renders them into the task's environment (`Envvars`). Everything else
of the environment goes into the task's `Env`. The variable is deleted when the ended job is
purged (`remove`).

Stop is the runtime's leave (sent by the manager), then a deregister here: Nomad sends the task
SIGTERM and kills it after KillTimeout; if it still runs after the caller's grace, the allocation
gets SIGKILL. The job stays readable (exit code, logs) until `remove` purges it.

Nomad's HTTP API: https://developer.hashicorp.com/nomad/api-docs (jobs, allocations, client,
variables, json-jobs). A transport error or a 5xx is BackendUnavailable, never "not found".

python-nomad blocks; the manager calls every method here from worker threads. Each thread gets its
own client (python-nomad keeps requests sessions that are not meant to be shared across threads).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import nomad
import nomad.api.exceptions as nomad_errors
import requests
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    Workload,
    WorkloadNotFound,
    WorkloadState,
    WorkloadStatus,
)

log = logging.getLogger(__name__)

#: The task's name inside the job (and in log and signal requests).
TASK = "bot"
#: Environment variables that travel through the Nomad Variable, never through the job.
SECRET_ENV = ("BOTFLEET_BOT_TOKEN", "BOTFLEET_BOT_SECRETS")
REDIS_ENV = "BOTFLEET_REDIS_URL"  # secret too when it carries a password
#: Where the template renders the secrets, inside the task's secrets dir.
SECRETS_FILE = "secrets/botfleet.env"
_META_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_VAR_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")  # Nomad's rule for variable paths
_NS = 1_000_000_000
_POLL_S = 0.2
_KILL_WAIT_S = 5.0
_MHZ_PER_CPU = 1000


class NomadOrchestratorConfig(BaseSettings):
    """Settings of the nomad backend (environment: `BOTFLEET_NOMAD_*`)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_NOMAD_", extra="ignore")

    address: str = Field(
        "http://127.0.0.1:4646", description="Nomad HTTP API address (a server or client agent)."
    )
    token: str | None = Field(
        None,
        description="ACL token (X-Nomad-Token). Needs submit-job, read-job, list-jobs, read-logs "
        "and variables write/destroy on nomad/jobs/* in the namespace.",
    )
    namespace: str | None = Field(None, description="Namespace of the jobs; Nomad's `default`.")
    region: str | None = Field(None, description="Region of the jobs; the agent's own when unset.")
    datacenters: list[str] = Field(
        default_factory=lambda: ["dc1"], min_length=1, description="Datacenters jobs may run in."
    )
    driver: Literal["docker", "exec", "raw_exec"] = Field(
        "docker", description="Task driver: `docker` runs the image, `exec`/`raw_exec` a command."
    )
    default_image: str = Field(
        "botfleet-runtime:latest", description="Image (docker driver) when the request names none."
    )
    command: list[str] = Field(
        default_factory=lambda: ["python3", "-m", "bot_runtime"],
        min_length=1,
        description="Command of exec/raw_exec tasks, on the Nomad client; JSON list.",
    )
    network_mode: str = Field(
        "host",
        description="Docker network mode of the task; bots must reach the manager and Redis.",
    )
    docker_user: str = Field("10001:10001", description="uid:gid of docker tasks (never root).")
    cpu_mhz: int = Field(500, gt=0, description="CPU per bot, in MHz (Nomad's unit).")
    memory_mb: int = Field(512, gt=0, description="Memory per bot, in MiB.")
    kill_timeout_s: float = Field(
        30.0,
        ge=0,
        description="KillTimeout: SIGTERM to SIGKILL on deregister. Match BOTFLEET_STOP_GRACE_S; "
        "Nomad clients cap it at their max_kill_timeout.",
    )
    job_prefix: str = Field("botfleet-", description="Job IDs are prefix + bot id + attempt.")
    logs_tail_bytes: int = Field(
        262144, gt=0, description="Bytes read from the end of each log stream for `logs`."
    )
    api_timeout_s: float = Field(15.0, gt=0, description="Timeout of one Nomad API call.")
    ca_cert: str | None = Field(None, description="CA bundle to verify an https address.")


# ---- errors -----------------------------------------------------------------------------------


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


# ---- status mapping ---------------------------------------------------------------------------


def _exit_code(alloc: Mapping[str, Any]) -> tuple[int | None, str]:
    """The task's exit code and a detail, from its last "Terminated" event."""
    state = (alloc.get("TaskStates") or {}).get(TASK) or {}
    events = state.get("Events") or []
    for event in reversed(events):
        if event.get("Type") == "Terminated":
            code = event.get("ExitCode")
            signal = event.get("Signal") or 0
            if signal and code in (0, -1, None):
                code = 128 + signal  # killed by a signal, reported as shells and Docker do
            detail = event.get("DisplayMessage") or event.get("Message") or ""
            return code, detail or f"exited with code {code}"
    for event in reversed(events):  # no exit: say why (driver failure, setup failure...)
        message = event.get("DisplayMessage") or event.get("DriverError") or event.get("SetupError")
        if message:
            return None, f"{event.get('Type', '')}: {message}".strip(": ")
    return None, alloc.get("ClientDescription") or ""


def alloc_status(alloc: Mapping[str, Any]) -> WorkloadStatus:
    """One allocation's ClientStatus (and its task's exit) in the shared vocabulary."""
    client_status = alloc.get("ClientStatus", "")
    if client_status == "pending":
        return WorkloadStatus(WorkloadState.PENDING)
    if client_status == "running":
        return WorkloadStatus(WorkloadState.RUNNING)
    if client_status in ("complete", "failed"):
        code, detail = _exit_code(alloc)
        return WorkloadStatus(WorkloadState.EXITED, code, detail)
    if client_status == "lost":
        return WorkloadStatus(WorkloadState.EXITED, None, "allocation lost")
    return WorkloadStatus(
        WorkloadState.UNKNOWN, detail=f"nomad allocation status {client_status!r}"
    )


def job_status(job: Mapping[str, Any], allocs: list[Mapping[str, Any]]) -> WorkloadStatus:
    """A job's status: its newest allocation's, or pending/exited while it has none."""
    if allocs:
        newest = max(allocs, key=lambda a: (a.get("CreateIndex", 0), a.get("CreateTime", 0)))
        return alloc_status(newest)
    if job.get("Status") == "dead":
        return WorkloadStatus(WorkloadState.EXITED, None, "the job ended without an allocation")
    return WorkloadStatus(WorkloadState.PENDING, detail="no allocation placed yet")


def meta_key(label: str) -> str:
    """The Nomad Meta key of a label: `botfleet.bot_id` -> `botfleet_bot_id` (Meta keys become
    NOMAD_META_* variables, so they keep to letters, digits and underscores)."""
    return _META_UNSAFE.sub("_", label)


def label_of(key: str) -> str:
    """The label a Meta key stands for: botfleet's own under their usual dotted names."""
    if key.startswith("botfleet_label_"):
        return "botfleet.label." + key.removeprefix("botfleet_label_")
    if key.startswith("botfleet_"):
        return "botfleet." + key.removeprefix("botfleet_")
    return key


def labels_of(meta: Mapping[str, str]) -> dict[str, str]:
    return {label_of(k): v for k, v in meta.items()}


def _is_secret(name: str, value: str) -> bool:
    if name in SECRET_ENV:
        return True
    if name == REDIS_ENV:
        try:
            return urlsplit(value).password is not None
        except ValueError:
            return True
    return False


def variable_path(job_id: str) -> str:
    return f"nomad/jobs/{job_id}"


def secrets_template(job_id: str, names: list[str]) -> str:
    """The template that renders the variable's items as KEY=value lines (toJSON quotes them)."""
    lines = [f'{{{{ with nomadVar "{variable_path(job_id)}" }}}}']
    lines += [f"{name}={{{{ .{name} | toJSON }}}}" for name in names]
    lines.append("{{ end }}")
    return "\n".join(lines) + "\n"


# ---- the backend ------------------------------------------------------------------------------


class NomadOrchestrator(Orchestrator):
    name: ClassVar[str] = "nomad"
    config_class: ClassVar[type[NomadOrchestratorConfig]] = NomadOrchestratorConfig

    def __init__(self, config: NomadOrchestratorConfig | None = None) -> None:
        self.config = config or NomadOrchestratorConfig()
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
        return {"namespace": self.config.namespace} if self.config.namespace else {}

    # ---- launch ------------------------------------------------------------------------------

    def job_id(self, spec: LaunchSpec) -> str:
        return f"{self.config.job_prefix}{spec.bot_id}-{spec.attempt}"

    def launch(self, spec: LaunchSpec) -> str:
        job_id = self.job_id(spec)
        if not _VAR_PATH.match(variable_path(job_id)):
            raise LaunchFailed(f"job id {job_id!r} cannot name a Nomad variable", code="bad_id")
        secrets = {k: v for k, v in spec.env.items() if _is_secret(k, v)}
        try:
            self._read_job(job_id)
        except WorkloadNotFound:
            pass
        else:
            raise LaunchFailed(f"a Nomad job {job_id!r} exists already", code="name_conflict")
        if secrets:
            self._write_variable(job_id, secrets)
        job = self.job_spec(spec, secret_names=sorted(secrets))
        try:
            with _nomad_errors(f"registering the job of bot {spec.bot_id}"):
                answer = self.client.jobs.register_job({"Job": job})
        except BackendUnavailable:
            raise  # the job may have been registered: the variable stays for it
        except OrchestratorError as exc:
            self._discard_variable(job_id)
            raise LaunchFailed(str(exc), code="job_rejected") from exc
        if answer.get("Warnings"):
            log.warning("nomad accepted job %s with warnings: %s", job_id, answer["Warnings"])
        log.info("registered nomad job %s (evaluation %s)", job_id, answer.get("EvalID", ""))
        return job_id

    def _write_variable(self, job_id: str, secrets: dict[str, str]) -> None:
        path = variable_path(job_id)
        payload = {"Namespace": self.config.namespace or "default", "Path": path, "Items": secrets}
        try:
            with _nomad_errors(f"writing the secrets of job {job_id}"):
                self.client.variable.create_variable(path, payload, **self._ns())
        except WorkloadNotFound as exc:  # a 404 here is no missing workload
            raise LaunchFailed(str(exc), code="variable_rejected") from exc
        except BackendUnavailable:
            raise
        except OrchestratorError as exc:
            raise LaunchFailed(str(exc), code="variable_rejected") from exc

    def job_spec(self, spec: LaunchSpec, *, secret_names: list[str]) -> dict[str, Any]:
        """The JSON job (https://developer.hashicorp.com/nomad/api-docs/json-jobs)."""
        cfg = self.config
        job_id = self.job_id(spec)
        meta = {meta_key(k): v for k, v in spec.workload_labels().items()}
        env = {k: v for k, v in spec.env.items() if k not in secret_names}
        cpu = cfg.cpu_mhz
        if spec.resources.cpus:
            cpu = max(1, round(spec.resources.cpus * _MHZ_PER_CPU))
        task: dict[str, Any] = {
            "Name": TASK,
            "Driver": cfg.driver,
            "Config": self._driver_config(spec),
            "Env": env,
            "Templates": [
                {
                    "EmbeddedTmpl": secrets_template(job_id, secret_names),
                    "DestPath": SECRETS_FILE,
                    "Envvars": True,
                    "ChangeMode": "noop",  # the secrets of an attempt never change
                    "Perms": "0400",
                }
            ]
            if secret_names
            else [],
            "Resources": {"CPU": cpu, "MemoryMB": spec.resources.memory_mb or cfg.memory_mb},
            "KillSignal": "SIGTERM",  # the runtime leaves on SIGTERM (Nomad's default is SIGINT)
            "KillTimeout": int(cfg.kill_timeout_s * _NS),
            "LogConfig": {"MaxFiles": 2, "MaxFileSizeMB": 10},
            "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
        }
        if cfg.driver == "docker":
            task["User"] = cfg.docker_user
        return {
            "ID": job_id,
            "Name": job_id,
            "Type": "batch",
            "Namespace": cfg.namespace or "default",
            **({"Region": cfg.region} if cfg.region else {}),
            "Datacenters": list(cfg.datacenters),
            "Meta": meta,
            "TaskGroups": [
                {
                    "Name": TASK,
                    "Count": 1,
                    # botfleet owns restarts: Nomad neither restarts nor reschedules a bot.
                    "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                    "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                    "Tasks": [task],
                }
            ],
        }

    def _driver_config(self, spec: LaunchSpec) -> dict[str, Any]:
        cfg = self.config
        if cfg.driver == "docker":
            return {
                "image": spec.image or cfg.default_image,
                "network_mode": cfg.network_mode,
                "init": True,
                "readonly_rootfs": True,
                "cap_drop": ["ALL"],
                "security_opt": ["no-new-privileges"],
                "pids_limit": spec.resources.pids or 256,
                "mount": [{"type": "tmpfs", "target": "/tmp", "readonly": False}],
            }
        return {"command": cfg.command[0], "args": list(cfg.command[1:])}

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
        try:
            job = self._read_job(job_id)
            allocs = self._allocations(job_id)
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such nomad job"), []
        return job_status(job, allocs), allocs

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        return self._status(runtime_ref)[0]

    def _wait(self, job_id: str, timeout: float) -> tuple[WorkloadStatus, list[dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while True:
            status, allocs = self._status(job_id)
            if status.is_gone or time.monotonic() >= deadline:
                return status, allocs
            time.sleep(_POLL_S)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """Deregister (Nomad sends SIGTERM, kills after KillTimeout); SIGKILL after `grace_s`."""
        status = self.inspect(runtime_ref)
        if status.is_gone:
            return status
        try:
            with _nomad_errors(f"stopping job {runtime_ref}"):
                self.client.job.deregister_job(runtime_ref)
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such nomad job")
        status, allocs = self._wait(runtime_ref, grace_s)
        if status.is_gone:
            return status
        for alloc in allocs:
            if alloc.get("ClientStatus") in ("pending", "running"):
                try:
                    with _nomad_errors(f"killing allocation {alloc['ID'][:8]}"):
                        self.client.client.allocation.signal_allocation(
                            alloc["ID"], "SIGKILL", task=TASK
                        )
                except OrchestratorError as exc:  # it may have ended meanwhile
                    log.info("SIGKILL to job %s: %s", runtime_ref, exc)
        status, _ = self._wait(runtime_ref, _KILL_WAIT_S)
        if not status.is_gone:
            detail = f"still running {_KILL_WAIT_S:g}s after SIGKILL"
            return WorkloadStatus(status.state, status.exit_code, detail)
        return status

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
                status = self._listed_status(stub)
            except WorkloadNotFound:  # purged meanwhile
                continue
            if status.state == WorkloadState.NOT_FOUND:
                continue
            workloads.append(
                Workload(job_id, meta.get(meta_key(LABEL_BOT_ID), ""), labels_of(meta), status)
            )
        return workloads

    def _listed_status(self, stub: Mapping[str, Any]) -> WorkloadStatus:
        """From the listing's summary while the job lives; exact (exit code) once it is dead."""
        if stub.get("Status") != "dead":
            summary = (stub.get("JobSummary") or {}).get("Summary") or {}
            counts = summary.get(TASK) or {}
            if counts.get("Running"):
                return WorkloadStatus(WorkloadState.RUNNING)
            if counts.get("Queued") or counts.get("Starting") or not counts:
                return WorkloadStatus(WorkloadState.PENDING)
        return self.inspect(stub["ID"])

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
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The newest allocation's stdout, then its stderr (Nomad keeps them apart); last lines.

        WorkloadNotFound once the job was purged.
        """
        if tail <= 0:
            return ""
        allocs = self._allocations(runtime_ref)
        if not allocs:
            self._read_job(runtime_ref)  # raises WorkloadNotFound when the job is gone
            return ""
        newest = max(allocs, key=lambda a: (a.get("CreateIndex", 0), a.get("CreateTime", 0)))
        lines: list[str] = []
        for stream in ("stdout", "stderr"):
            with _nomad_errors(f"reading the {stream} of job {runtime_ref}"):
                text = self.client.client.stream_logs.stream(
                    newest["ID"],
                    TASK,
                    stream,
                    offset=self.config.logs_tail_bytes,
                    origin="end",
                    plain=True,
                )
            chunk = text.splitlines()
            if len(text.encode()) >= self.config.logs_tail_bytes and chunk:
                chunk = chunk[1:]  # cut mid-line by the byte offset
            lines += chunk[-tail:]
        return "\n".join(lines[-tail:])

    def check_health(self) -> None:
        with _nomad_errors("asking Nomad for its leader"):
            leader = self.client.status.leader.get_leader()
        if not leader:
            raise BackendUnavailable("Nomad has no leader")

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
