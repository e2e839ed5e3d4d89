"""`DockerOrchestrator`: the contract, over the docker package's parts (see its docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import docker
import docker.errors
from docker.models.containers import Container

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    STATE_MOUNT,
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
from botfleet.orchestrators.docker.config import DockerOrchestratorConfig
from botfleet.orchestrators.docker.containers import container_status, create_args, still_runs
from botfleet.orchestrators.docker.engine import connect, engine_errors
from botfleet.orchestrators.docker.logs import ContainerFollower, last_lines
from botfleet.orchestrators.docker.network import BotNetwork, NetworkMissing
from botfleet.orchestrators.docker.volumes import ensure_volume, purge_volume, volume_name


class DockerOrchestrator(Orchestrator):
    name = "docker"
    config_class: ClassVar[type[DockerOrchestratorConfig]] = DockerOrchestratorConfig

    def __init__(self, config: DockerOrchestratorConfig | None = None) -> None:
        self.config = config or DockerOrchestratorConfig()
        self._client: docker.DockerClient | None = None
        self._network = BotNetwork(self.config.network, lambda: self.client)

    @property
    def client(self) -> docker.DockerClient:
        """Connect lazily, so a manager starts (and /readyz reports) while the engine is down."""
        if self._client is None:
            self._client = connect(self.config)
        return self._client

    # ---- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> str:
        image = spec.image or self.config.default_image
        with engine_errors(f"launching bot {spec.bot_id}"):
            try:
                return self._create_and_start(image, spec)
            except NetworkMissing:  # removed since it was checked: make it again, once
                self._network.forget()
            try:
                return self._create_and_start(image, spec)
            except NetworkMissing as exc:
                raise LaunchFailed(str(exc), code="network_unavailable") from exc

    def _create_and_start(self, image: str, spec: LaunchSpec) -> str:
        """create + start, not run(): run() would try to pull a missing image."""
        self._network.ensure()
        try:
            container = self.client.containers.create(image, **self._create_args(spec))
        except docker.errors.ImageNotFound as exc:
            raise LaunchFailed(
                f"image {image!r} is not on the Docker Engine", code="image_not_found"
            ) from exc
        except docker.errors.APIError as exc:
            self._network.raise_if_missing(exc)
            if exc.status_code == 409:
                raise LaunchFailed(
                    f"a container named {self._name(spec)!r} exists already",
                    code="name_conflict",
                ) from exc
            if exc.status_code is not None and exc.status_code < 500:
                raise LaunchFailed(str(exc.explanation or exc), code="launch_failed") from exc
            raise
        try:
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            self._network.raise_if_missing(exc)
            raise LaunchFailed(str(exc.explanation or exc), code="launch_failed") from exc
        return str(container.id)

    def _name(self, spec: LaunchSpec) -> str:
        return f"{self.config.name_prefix}{spec.bot_id}-{spec.attempt}"

    def _create_args(self, spec: LaunchSpec) -> dict[str, Any]:
        """The container of this attempt (containers.py), its state volume and its network."""
        volume = None
        if spec.state is not None:
            volume = ensure_volume(
                self.client,
                self._volume_name(spec.state),
                spec.state,
                size_mb=self.config.state_volume_mb,
            )
        args = create_args(self.config, spec, name=self._name(spec), state_volume=volume)
        return args | self._network.container_args()

    # ---- state volumes -----------------------------------------------------------------------

    def _volume_name(self, state: StateRef) -> str:
        return volume_name(self.config.name_prefix, state)

    def state_dir(self, state: StateRef) -> str:
        return STATE_MOUNT

    def purge_state(self, state: StateRef) -> None:
        purge_volume(self.client, self._volume_name(state))

    # ---- watch and stop ----------------------------------------------------------------------

    def _get(self, runtime_ref: str) -> Container:
        with engine_errors(f"reading container {runtime_ref[:12]}"):
            return self.client.containers.get(runtime_ref)

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        try:
            return container_status(self._get(runtime_ref))
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """docker stop: the engine runs the stop ladder itself (SIGTERM, SIGKILL after the
        grace), so orchestrators/stopping.py is not needed here."""
        try:
            container = self._get(runtime_ref)
            with engine_errors(f"stopping container {runtime_ref[:12]}"):
                if container.status == "created":  # never started: nothing to record
                    container.remove(force=True)
                    return WorkloadStatus(WorkloadState.NOT_FOUND)
                container.stop(timeout=max(0, round(grace_s)))
                container.reload()
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND)
        return container_status(container)

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        wanted = {LABEL_MANAGED: "true", **(labels or {})}
        filters = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        with engine_errors("listing containers"):
            summaries = self.client.api.containers(all=True, filters=filters)
        workloads = []
        for summary in summaries:
            try:  # the list has no exit codes: inspect each, skipping any removed meanwhile
                container = self._get(summary["Id"])
            except WorkloadNotFound:
                continue
            workloads.append(
                Workload(
                    runtime_ref=str(container.id),
                    bot_id=container.labels.get(LABEL_BOT_ID, ""),
                    labels=dict(container.labels),
                    status=container_status(container),
                )
            )
        return workloads

    def remove(self, runtime_ref: str) -> None:
        try:
            container = self._get(runtime_ref)
        except WorkloadNotFound:
            return
        if still_runs(container):
            raise OrchestratorError(f"container {runtime_ref[:12]} still runs; stop it first")
        with engine_errors(f"removing container {runtime_ref[:12]}"):
            container.remove(v=True, force=container.status == "created")

    # ---- capabilities ------------------------------------------------------------------------

    @property
    def runtime_image(self) -> str | None:
        return self.config.default_image

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The container's last `tail` lines, capped; WorkloadNotFound once it was removed."""
        container = self._get(runtime_ref)
        return last_lines(container, runtime_ref, tail=tail, limits=self.config.log_limits())

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """Polls the engine (logs.py): a blocking `follow=True` stream would hold a thread for
        the stream's whole life."""
        container = self._get(runtime_ref)
        first = self.logs(runtime_ref, bot_id=bot_id, tail=tail) if tail > 0 else ""
        return ContainerFollower(container, first, self.config.log_limits())

    def check_health(self) -> None:
        with engine_errors("pinging the Docker Engine"):
            self.client.ping()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
