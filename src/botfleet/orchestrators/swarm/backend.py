"""`SwarmOrchestrator`: the contract over Docker Swarm services (see the package docstring)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, ClassVar

import docker
import docker.errors
import requests.exceptions

from botfleet.orchestrators.base import (
    STATE_MOUNT,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    LogFollower,
    Orchestrator,
    OrchestratorError,
    Placement,
    PlacementUnsupported,
    StateRef,
    Workload,
    WorkloadState,
    WorkloadStatus,
)
from botfleet.orchestrators.docker.engine import engine_errors
from botfleet.orchestrators.docker.logs import last_lines
from botfleet.orchestrators.docker.volumes import purge_volume, volume_name
from botfleet.orchestrators.swarm import nodes as state_pins
from botfleet.orchestrators.swarm.config import SwarmOrchestratorConfig
from botfleet.orchestrators.swarm.constraints import constraints_of
from botfleet.orchestrators.swarm.logs import LazyFollower
from botfleet.orchestrators.swarm.nodes import NodeEngines, connect
from botfleet.orchestrators.swarm.reader import SwarmReader
from botfleet.orchestrators.swarm.service_spec import (
    create_args,
    image_argv,
    secret_data,
    secret_labels,
    service_name,
)
from botfleet.orchestrators.swarm.status import (
    LABEL_SHUT_BY_SWARM,
    node_name,
    node_state,
    recorded_exit,
    scaled_down,
)

NOT_FOUND = WorkloadStatus(WorkloadState.NOT_FOUND)
#: How often a stop looks whether the task ended (Swarm deletes a scaled-down task's record
#: a few hundred milliseconds after it ended: its exit code must be seen before).
POLL_S = 0.1


class SwarmOrchestrator(Orchestrator):
    name = "swarm"
    config_class: ClassVar[type[SwarmOrchestratorConfig]] = SwarmOrchestratorConfig

    def __init__(self, config: SwarmOrchestratorConfig | None = None) -> None:
        self.config = config or SwarmOrchestratorConfig()
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self.engines = NodeEngines(self.config, lambda: self.client)
        self.reader = SwarmReader(lambda: self.client, self.engines)
        self.reader.on_doomed = self._mark_shut_by_swarm

    @property
    def client(self) -> docker.DockerClient:
        """The manager node's engine, connected lazily (the manager starts while it is down)."""
        with self._lock:
            if self._client is None:
                self._client = connect(self.config.base_url, self.config.api_timeout_s)
            return self._client

    # ---- placement and launch ----------------------------------------------------------------

    def check_placement(self, placement: Placement) -> None:
        constraints_of(placement)

    def launch(self, spec: LaunchSpec) -> str:
        image = spec.image or self.config.default_image
        try:
            constraints = constraints_of(spec.placement)
        except PlacementUnsupported as exc:
            raise LaunchFailed(str(exc), code="placement_unsupported") from exc
        with engine_errors(f"launching bot {spec.bot_id}"):
            attrs = self._image(image)
            argv = list(spec.command) if spec.command is not None else image_argv(attrs)
            if not argv:
                raise LaunchFailed(f"image {image!r} has no ENTRYPOINT or CMD to run")
            volume = None
            if spec.state is not None:
                volume = volume_name(self.config.name_prefix, spec.state)
                pin = state_pins.pin_state(self.client, self.config, spec.state, constraints)
                constraints.append(pin)
            secret_id = self._create_secret(spec)
            args = create_args(
                self.config,
                spec,
                image_id=str(attrs["Id"]),
                argv=argv,
                secret_id=secret_id,
                constraints=constraints,
                state_volume=volume,
            )
            try:
                created = self.client.api.create_service(**args)
            except BaseException as exc:
                with suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                    self.client.api.remove_secret(secret_id)
                if isinstance(exc, docker.errors.APIError):
                    self._refused(exc, spec)
                raise
        return str(created["ID"])

    def _image(self, image: str) -> dict[str, Any]:
        """The image as the manager's engine holds it; the service names it by its id, so no
        node tries a registry and every node runs the same image."""
        try:
            return dict(self.client.api.inspect_image(image))
        except docker.errors.NotFound as exc:
            raise LaunchFailed(
                f"image {image!r} is not on the swarm manager's Docker Engine; load it on "
                "every node (docker save | docker load, docs/how-to/swarm.md)",
                code="image_not_found",
            ) from exc

    def _create_secret(self, spec: LaunchSpec) -> str:
        name = service_name(self.config, spec)
        try:
            made = self.client.api.create_secret(name, secret_data(spec), secret_labels(spec))
        except docker.errors.APIError as exc:
            self._refused(exc, spec)
            raise
        return str(made["ID"])

    def _refused(self, exc: docker.errors.APIError, spec: LaunchSpec) -> None:
        """LaunchFailed where the engine answered and refused; else nothing (engine_errors)."""
        if exc.status_code == 409:
            raise LaunchFailed(
                f"a service or secret named {service_name(self.config, spec)!r} exists already",
                code="name_conflict",
            ) from exc
        if exc.status_code is not None and exc.status_code < 500:
            raise LaunchFailed(str(exc.explanation or exc), code="launch_failed") from exc

    # ---- state volumes -----------------------------------------------------------------------

    def state_dir(self, state: StateRef) -> str:
        return STATE_MOUNT

    def purge_state(self, state: StateRef) -> None:
        """Remove the state's volume on the node that holds it, then the node's pin label."""
        label = state_pins.state_label(self.config, state)
        volume = volume_name(self.config.name_prefix, state)
        with engine_errors("listing the swarm's nodes"):
            node = state_pins.holder(self.client.api.nodes(), label)
        if node is None:  # never launched, or purged already
            return
        client = self.engines.client_for(node)
        where = node_name(node, str(node.get("ID")))
        if client is None:
            raise OrchestratorError(
                f"the state volume {volume} is on node {where}, whose engine botfleet cannot "
                "reach: set BOTFLEET_SWARM_NODE_ENGINES for it, or run `docker volume rm "
                f"{volume}` there and remove the node label {label}"
            )
        try:
            purge_volume(client, volume)
        except BackendUnavailable as exc:
            raise self.engines.unreachable(node, exc) from exc
        state_pins.unpin_state(self.client, str(node["ID"]), label)

    # ---- watch and stop ----------------------------------------------------------------------

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        view = self.reader.view(runtime_ref)
        return NOT_FOUND if view is None else self.reader.status(view)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """Stop the task's container on its node's engine (the exact grace; the task ends
        `complete` or `failed` and stays readable), else scale the service to 0 (Swarm stops
        it with the grace it was created with: BOTFLEET_STOP_GRACE_S). Waits for the end up to
        the grace and a margin; a node that is not ready answers UNKNOWN, never an exit."""
        view = self.reader.view(runtime_ref)
        if view is None:
            return NOT_FOUND
        status = self.reader.status(view)
        if status.is_gone:
            return status
        margin = max(2.0, self.config.kill_wait_s)
        container = self.reader.node_container(view)
        if container is not None:
            with engine_errors(f"stopping the container of service {runtime_ref[:12]}"):
                container.stop(timeout=max(0, round(grace_s)))
            return self._wait_end(runtime_ref, margin)
        if not scaled_down(view.service):
            self._update(view.service, mode={"Replicated": {"Replicas": 0}})
        if view.node is not None and node_state(view.node) != "ready":
            return self.reader.status(view)
        spec = ((view.task or {}).get("Spec") or {}).get("ContainerSpec") or {}
        grace = int(spec.get("StopGracePeriod") or self.config.stop_grace_s * 1e9) / 1e9
        final = self._wait_end(runtime_ref, grace + margin)
        if status.state is WorkloadState.PENDING and status.detail and final.exit_code is None:
            final = dataclasses.replace(final, detail=f"never started: {status.detail}")
        if recorded := recorded_exit(final):  # Swarm deletes the task's record soon
            with suppress(OrchestratorError):
                service = self.reader.service(runtime_ref)
                if service is not None:
                    labels = dict((service.get("Spec") or {}).get("Labels") or {})
                    self._update(service, labels=labels | recorded)
        return final

    def _wait_end(self, ref: str, timeout: float) -> WorkloadStatus:
        """The status once the task ended, its node is lost to sight, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.reader.view(ref)
            status = NOT_FOUND if view is None else self.reader.status(view)
            if status.is_gone or status.state is WorkloadState.UNKNOWN:
                return status
            if time.monotonic() >= deadline:
                return status
            time.sleep(POLL_S)

    def _update(
        self,
        service: Mapping[str, Any],
        *,
        mode: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Change the service's mode or labels only: its task template is sent back as it is,
        so Swarm replaces no task."""
        spec = service.get("Spec") or {}
        with engine_errors(f"updating service {str(service.get('ID'))[:12]}"):
            self.client.api.update_service(
                str(service["ID"]),
                int((service.get("Version") or {}).get("Index") or 0),
                task_template=spec.get("TaskTemplate"),
                name=spec.get("Name"),
                labels=dict(labels if labels is not None else spec.get("Labels") or {}),
                mode=dict(mode if mode is not None else spec.get("Mode") or {}),
                endpoint_spec=spec.get("EndpointSpec"),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
            )

    def _mark_shut_by_swarm(self, service: Mapping[str, Any]) -> None:
        """Record on the service that Swarm itself is shutting its task down (its node was lost
        or drained): a restarted engine SIGTERMs the bot, whose task then ends `complete`, which
        alone would read as the bot's own exit (`status.LABEL_SHUT_BY_SWARM`). Retried on the
        next read when the update fails."""
        labels = dict((service.get("Spec") or {}).get("Labels") or {})
        with suppress(OrchestratorError):
            self._update(service, labels=labels | {LABEL_SHUT_BY_SWARM: "true"})

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        return self.reader.workloads(labels)

    def remove(self, runtime_ref: str) -> None:
        """Delete an ended service and its secret (the exit is recorded by now)."""
        view = self.reader.view(runtime_ref)
        if view is None:
            return
        status = self.reader.status(view)
        if not status.is_gone:
            raise OrchestratorError(
                f"service {runtime_ref[:12]} has not ended ({status.state}); stop it first"
            )
        container = ((view.service.get("Spec") or {}).get("TaskTemplate") or {}).get(
            "ContainerSpec"
        ) or {}
        with engine_errors(f"removing service {runtime_ref[:12]}"):
            with suppress(docker.errors.NotFound):
                self.client.api.remove_service(runtime_ref)
            for secret in container.get("Secrets") or []:
                with suppress(docker.errors.NotFound):
                    self.client.api.remove_secret(secret["SecretID"])

    # ---- logs and health ---------------------------------------------------------------------

    @property
    def runtime_image(self) -> str | None:
        return self.config.default_image

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        source = self.reader.log_source(runtime_ref, self.config.log_limits())
        if source is None:
            return ""
        return last_lines(source, runtime_ref, tail=tail, limits=self.config.log_limits())

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """Polls the task's output (logs.py); the manager ends it once `inspect` says ended."""
        first = self.logs(runtime_ref, bot_id=bot_id, tail=tail) if tail > 0 else ""
        limits = self.config.log_limits()
        return LazyFollower(
            first, lambda: self.reader.log_source(runtime_ref, self.config.log_limits()), limits
        )

    def check_health(self) -> None:
        """The engine answers, is in a swarm, and is one of its managers."""
        with engine_errors("asking the swarm manager's Docker Engine"):
            swarm = self.client.info().get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active":
                raise BackendUnavailable(
                    f"the Docker Engine is not in a swarm ({swarm.get('LocalNodeState')!r})"
                )
            if not swarm.get("ControlAvailable"):
                raise BackendUnavailable(
                    "the Docker Engine is a swarm worker: BOTFLEET_SWARM_BASE_URL must name a "
                    "manager's engine"
                )
            self.client.api.nodes(filters={"role": "manager"})

    def close(self) -> None:
        self.engines.close()
        if self._client is not None:
            self._client.close()
