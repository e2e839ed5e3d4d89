"""The nomad backend: one Nomad batch job per bot attempt, through python-nomad.

Each attempt is a job `<job_prefix><bot_id>-<attempt>` (the runtime_ref), built by
`jobspec.build_job` and submitted by `submit.submit`, its secrets in a Nomad Variable that is
deleted when the ended job is purged (`remove`).

Stop is the runtime's leave (sent by the manager), then the shared stop ladder
(orchestrators/stopping.py): a deregister (Nomad sends the task SIGTERM and kills it after
KillTimeout, the manager's stop grace), then SIGKILL to the allocation if it still runs after the
caller's grace. The job stays readable (exit code, logs) until `remove` purges it.

python-nomad blocks; the manager calls every method here from worker threads (api.py gives each
thread its own client).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, ClassVar

import nomad

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    STATE_MOUNT,
    BackendUnavailable,
    CapabilityNotSupported,
    LaunchFailed,
    LaunchSpec,
    LogFollower,
    Orchestrator,
    OrchestratorError,
    Placement,
    PlacementUnsupported,
    StateRef,
    Workload,
    WorkloadNotFound,
    WorkloadState,
    WorkloadStatus,
)
from botfleet.orchestrators.log_tail import tail_text
from botfleet.orchestrators.nomad.api import (
    ConflictingNomadEnvironment,
    NomadApi,
    NomadObject,
    SignalRefused,
    api_errors,
    refuse_silent_environment,
)
from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import (
    build_job,
    is_valid_variable_path,
    labels_of,
    meta_key,
    placement_constraints,
    state_volume,
    variable_path,
)
from botfleet.orchestrators.nomad.logs import STREAMS, TaskLogFollower, last_lines
from botfleet.orchestrators.nomad.placement import blocked_reason
from botfleet.orchestrators.nomad.status import (
    extra_copies,
    first_alloc,
    is_live,
    job_status,
    summary_status,
)
from botfleet.orchestrators.nomad.submit import submit
from botfleet.orchestrators.stopping import Engine, poll_until_gone, stop_workload

__all__ = ["ConflictingNomadEnvironment", "NomadOrchestrator", "SignalRefused"]

log = logging.getLogger(__name__)

_NOT_FOUND = WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such nomad job")


class NomadOrchestrator(Orchestrator):
    name: ClassVar[str] = "nomad"
    config_class: ClassVar[type[NomadOrchestratorConfig]] = NomadOrchestratorConfig

    def __init__(self, config: NomadOrchestratorConfig | None = None) -> None:
        self.config = config or NomadOrchestratorConfig()
        refuse_silent_environment(self.config, os.environ)
        self._api = NomadApi(self.config)

    @property
    def client(self) -> nomad.Nomad:
        """This thread's python-nomad client."""
        return self._api.client

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

    def check_placement(self, placement: Placement) -> None:
        """Nomad places by constraints, node meta (`node_labels`) and datacenters (jobspec.py);
        an expression Nomad would refuse or ignore is refused here, before the bot is stored."""
        try:
            placement_constraints(placement)
        except ValueError as exc:
            raise PlacementUnsupported(str(exc)) from exc

    def job_id(self, spec: LaunchSpec) -> str:
        return f"{self.config.job_prefix}{spec.bot_id}-{spec.attempt}"

    def job_spec(
        self, spec: LaunchSpec, *, secret_names: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The job of this attempt; `secret_names` defaults to the spec's `secret_env`."""
        names = spec.secret_env.keys() if secret_names is None else secret_names
        return build_job(self.config, spec, job_id=self.job_id(spec), secret_names=names)

    def launch(self, spec: LaunchSpec) -> str:
        """Create the attempt's job, never update one: a job or secrets variable of this ID
        that exists already fails the launch `name_conflict` (`submit`: create-only writes)."""
        job_id = self.job_id(spec)
        if not is_valid_variable_path(variable_path(job_id)):
            raise LaunchFailed(f"job id {job_id!r} cannot name a Nomad variable", code="bad_id")
        submit(self._api, job_id, self.job_spec(spec), dict(spec.secret_env))
        return job_id

    # ---- watch -------------------------------------------------------------------------------

    def _status(self, job_id: str) -> tuple[WorkloadStatus, list[NomadObject]]:
        """The job's status; a second live copy of the bot is killed on sight (see
        `_kill_extra_copies`), and a job without allocations says why, when Nomad said."""
        try:
            job = self._api.read_job(job_id)
            allocs = self._api.allocations(job_id)
            blocked = None if allocs else self._blocked_reason(job_id)
            allocs = self._with_lost_states(allocs)
        except WorkloadNotFound:
            return _NOT_FOUND, []
        self._kill_extra_copies(job_id, allocs)
        return job_status(job, allocs, blocked=blocked), allocs

    def _with_lost_states(self, allocs: list[NomadObject]) -> list[NomadObject]:
        """A lost first allocation read whole: when Nomad marked it lost (its AllocStates) says
        when it counts as ended (`status.client_stop_deadline_ns`); a stub lacks them."""
        if not allocs or first_alloc(allocs).get("ClientStatus") != "lost":
            return allocs
        first = first_alloc(allocs)
        try:
            whole = {**first, **self._api.read_alloc(str(first["ID"]))}
        except WorkloadNotFound:  # collected meanwhile: its stub's ModifyTime will do
            return allocs
        return [whole if a is first else a for a in allocs]

    def _blocked_reason(self, job_id: str) -> str | None:
        """Why Nomad has not placed the job, from its evaluations (None: it did not say)."""
        try:
            with api_errors(f"reading the evaluations of job {job_id}"):
                evaluations = self.client.job.get_evaluations(job_id) or []
        except WorkloadNotFound:
            raise
        except OrchestratorError as exc:
            log.info("evaluations of job %s: %s", job_id, exc)
            return None
        return blocked_reason(evaluations)

    def _kill_extra_copies(self, job_id: str, allocs: list[NomadObject]) -> None:
        """A job is one copy of one bot: its first allocation. Another live one (Nomad replaced
        a lost node's allocation, or an operator's `nomad alloc stop` rescheduled it) runs the
        same bot with the same token, so it is killed; the first speaks for the job. The
        reconciler's listing each tick finds it: a job whose summary shows more than one
        allocation is inspected (`summary_status`)."""
        for extra in extra_copies(allocs):
            log.warning("job %s: allocation %s is a second copy of the bot; killing it",
                        job_id, str(extra["ID"])[:8])  # fmt: skip
            try:
                self._api.signal(str(extra["ID"]), "SIGKILL")
            except OrchestratorError as exc:
                log.warning("could not kill the second copy of job %s: %s", job_id, exc)

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        return self._status(runtime_ref)[0]

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """The shared ladder: deregister (SIGTERM), SIGKILL to live allocations after `grace_s`."""
        allocs: list[NomadObject] = []

        def terminate() -> WorkloadStatus | None:
            try:
                with api_errors(f"stopping job {runtime_ref}"):
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
                    self._api.signal(str(alloc["ID"]), "SIGKILL")
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
        with api_errors("listing jobs"):
            stubs = self.client.jobs.get_jobs(prefix=self.config.job_prefix, meta=True) or []
        workloads = []
        for stub in stubs:
            job_id = stub.get("ID", "")
            try:
                meta = stub["Meta"] if "Meta" in stub else self._api.read_job(job_id).get("Meta")
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
        self._api.delete_variable(runtime_ref)
        if status.state == WorkloadState.NOT_FOUND:
            return
        try:
            with api_errors(f"purging job {runtime_ref}"):
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
                data = self._api.read_log(alloc_id, stream, "end", window, window)
            except WorkloadNotFound:
                # A task that never started (a driver failure, an image that cannot be
                # pulled): no output yet (client/fs_endpoint.go). Logs on an unreachable node,
                # or collected ones, raise (api.py `_missing_logs`): never an empty log.
                data = b""
            windows.append((data, len(data) < window))  # else cut mid-line by the byte offset
        return tail_text(last_lines(windows, tail), tail=tail, limits=self.config.log_limits())

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """Polls Stream Logs from byte offsets (orchestrators/nomad/logs.py): a `follow=true`
        stream would hold a thread for the stream's whole life."""
        return TaskLogFollower.open(
            self._api.read_log,
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
        allocs = self._api.allocations(runtime_ref)
        if not allocs:
            self._api.read_job(runtime_ref)  # raises WorkloadNotFound when the job is gone
            return None
        return str(first_alloc(allocs)["ID"])

    def check_health(self) -> None:
        with api_errors("asking Nomad for its leader"):
            leader = self.client.status.leader.get_leader()
        if not leader:
            raise BackendUnavailable("Nomad has no leader")

    def close(self) -> None:
        self._api.close()
