"""The `docker` backend: one container per bot attempt, on a Docker Engine via the docker SDK.

Containers are hardened by the shared policy (orchestrators/hardening.py: no new privileges,
every capability dropped, read-only root with a tmpfs /tmp, a non-root user, CPU/memory/pids
limits) and carry labels that identify botfleet, the
bot and the user; never the environment, which holds the bot's token and secrets. They are not
auto-removed: the exit code and the last log lines are read first, then the reconciler removes
them (`remove`).

Networking: by default a container shares the host's network (`host`), because on one machine the
manager's default callback URL and Redis listen on 127.0.0.1, which only a host-networked
container reaches. That also lets a bot reach every port of the host (the database and Redis
included). A named network that the engine does not have is created on the first launch (a bridge
labelled `botfleet.managed=true`); it is never removed, since other fleets' bots may share it.

State: a bot with a `state_key` gets a named volume (`<prefix>state-<hash of user and key>`)
mounted at /state, the one writable path besides /tmp. A new volume takes the ownership of the
image's /state (the runtime image makes it 0700 for uid 10001), so another image needs a /state
its user may write.

The docker SDK blocks; the manager calls every method here from worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    LABEL_USER_ID,
    BackendUnavailable,
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
from botfleet.orchestrators.config import BackendConfig
from botfleet.orchestrators.hardening import Hardening
from botfleet.orchestrators.log_tail import LogLimits, tail_text

log = logging.getLogger(__name__)


class DockerOrchestratorConfig(BackendConfig):
    """Settings of the docker backend (environment: `BOTFLEET_DOCKER_*`)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_DOCKER_", extra="ignore")

    base_url: str | None = Field(
        None, description="Docker Engine address; DOCKER_HOST or the local socket when unset."
    )
    default_image: str = Field(
        "botfleet-runtime:latest", description="Image for bots whose request names none."
    )
    network: str = Field(
        "host",
        description="Network the containers join. `host` (the default) shares the host's "
        "network, so bots reach a manager and Redis listening on 127.0.0.1, and also every other "
        "port of the host, the database and Redis included. `none` gives them no network. Any "
        "other name is a Docker network, created as a bridge on the first launch when the engine "
        "has none of that name; bots must reach the manager and Redis from it "
        "(BOTFLEET_CALLBACK_URL, BOTFLEET_BOT_REDIS_URL).",
    )
    cpus: float | None = Field(1.0, gt=0, description="CPU limit per bot.")
    memory_mb: int | None = Field(512, gt=0, description="Memory limit per bot, in MiB.")
    pids_limit: int | None = Field(256, gt=0, description="Process limit per bot.")
    user: str = Field("10001:10001", description="uid:gid the bot runs as (never root).")
    tmpfs_mb: int = Field(64, gt=0, description="Size of the writable /tmp.")
    api_timeout_s: float = Field(30.0, gt=0, description="Timeout of one Docker API call.")
    name_prefix: str = Field("botfleet-", description="Container names are prefix + bot id.")

    def hardening(self) -> Hardening:
        """The shared policy with this backend's limits."""
        return Hardening(
            user=self.user,
            tmpfs_mb=self.tmpfs_mb,
            pids_limit=self.pids_limit,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
        )


#: Where a bot's state volume is mounted (BOTFLEET_STATE_DIR).
STATE_MOUNT = "/state"


def _is_network_mode(network: str) -> bool:
    """`host`, `none` and `container:<id>` are modes, not networks: nothing to look up or create."""
    return network in ("host", "none") or network.startswith("container:")


def _status(container: Container) -> WorkloadStatus:
    """Docker's container state, in the shared vocabulary."""
    state: dict[str, Any] = container.attrs.get("State", {})
    status = state.get("Status", "")
    if status == "created":
        return WorkloadStatus(WorkloadState.PENDING)
    if status in ("running", "paused", "restarting"):
        return WorkloadStatus(WorkloadState.RUNNING)
    if status in ("exited", "dead"):
        detail = "out of memory (OOMKilled)" if state.get("OOMKilled") else state.get("Error", "")
        return WorkloadStatus(WorkloadState.EXITED, exit_code=state.get("ExitCode"), detail=detail)
    if status == "removing":
        return WorkloadStatus(WorkloadState.EXITED, exit_code=state.get("ExitCode"))
    return WorkloadStatus(WorkloadState.UNKNOWN, detail=f"docker state {status!r}")


def _hardening_args(policy: Hardening) -> dict[str, Any]:
    """The shared hardening policy as docker SDK `containers.create` arguments."""
    args: dict[str, Any] = {
        "user": policy.user,
        "read_only": policy.read_only_root,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,size={policy.tmpfs_mb}m"},
        "cap_drop": list(policy.cap_drop),
    }
    if policy.no_new_privileges:
        args["security_opt"] = ["no-new-privileges:true"]
    if policy.cpus:
        args["nano_cpus"] = int(policy.cpus * 1e9)
    if policy.memory_mb:
        args["mem_limit"] = f"{policy.memory_mb}m"
    if policy.pids_limit:
        args["pids_limit"] = policy.pids_limit
    return args


class _NetworkMissing(Exception):
    """The engine says the configured network does not exist (any more)."""


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Transport failures become BackendUnavailable, never "not found"."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise WorkloadNotFound(f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise BackendUnavailable(f"{what}: the Docker Engine does not answer ({exc})") from exc
    except docker.errors.APIError as exc:
        if exc.status_code is not None and exc.status_code >= 500:
            raise BackendUnavailable(f"{what}: {exc.explanation or exc}") from exc
        raise OrchestratorError(f"{what}: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(f"{what}: {exc}") from exc


class DockerOrchestrator(Orchestrator):
    name = "docker"
    config_class: ClassVar[type[DockerOrchestratorConfig]] = DockerOrchestratorConfig

    def __init__(self, config: DockerOrchestratorConfig | None = None) -> None:
        self.config = config or DockerOrchestratorConfig()
        self._client: docker.DockerClient | None = None
        # Launches run on many worker threads: one of them looks the network up (and creates it).
        self._network_lock = threading.Lock()
        self._network_ready = _is_network_mode(self.config.network)

    @property
    def client(self) -> docker.DockerClient:
        """Connect lazily, so a manager starts (and /readyz reports) while the engine is down."""
        if self._client is None:
            timeout = int(self.config.api_timeout_s)
            with _engine_errors("connecting to the Docker Engine"):
                if self.config.base_url:
                    self._client = docker.DockerClient(
                        base_url=self.config.base_url, timeout=timeout, version="auto"
                    )
                else:
                    self._client = docker.from_env(timeout=timeout)
        return self._client

    # ---- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> str:
        image = spec.image or self.config.default_image
        with _engine_errors(f"launching bot {spec.bot_id}"):
            try:
                return self._create_and_start(image, spec)
            except _NetworkMissing:  # removed since it was checked: make it again, once
                self._network_ready = False
            try:
                return self._create_and_start(image, spec)
            except _NetworkMissing as exc:
                raise LaunchFailed(str(exc), code="network_unavailable") from exc

    def _create_and_start(self, image: str, spec: LaunchSpec) -> str:
        """create + start, not run(): run() would try to pull a missing image."""
        self._ensure_network()
        try:
            container = self.client.containers.create(image, **self._create_args(spec))
        except docker.errors.ImageNotFound as exc:
            raise LaunchFailed(
                f"image {image!r} is not on the Docker Engine", code="image_not_found"
            ) from exc
        except docker.errors.APIError as exc:
            self._raise_if_network_missing(exc)
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
            self._raise_if_network_missing(exc)
            raise LaunchFailed(str(exc.explanation or exc), code="launch_failed") from exc
        return str(container.id)

    def _raise_if_network_missing(self, exc: docker.errors.APIError) -> None:
        """The engine checks the network at create or at start, depending on its version."""
        explanation = str(exc.explanation or exc)
        named_network = not _is_network_mode(self.config.network)
        if exc.status_code == 404 and named_network and "network" in explanation:
            raise _NetworkMissing(explanation) from exc

    def _ensure_network(self) -> None:
        """Make sure the configured network exists: create it, as a labelled bridge, if not.

        Looked up once (and again if a launch finds it gone). Raises LaunchFailed
        (`network_unavailable`) when the engine refuses to create it, BackendUnavailable when
        the engine cannot be asked.
        """
        if self._network_ready:
            return
        name = self.config.network
        with self._network_lock:
            if self._network_ready:
                return
            with _engine_errors(f"looking up the Docker network {name!r}"):
                # The name filter matches substrings: compare the names exactly.
                found = [n for n in self.client.api.networks(names=[name]) if n["Name"] == name]
                if not found:
                    self._create_network(name)
            self._network_ready = True

    def _create_network(self, name: str) -> None:
        log.info("creating the Docker network %r (a bridge) for the bots", name)
        try:
            self.client.api.create_network(
                name,
                driver="bridge",
                check_duplicate=True,
                labels={LABEL_MANAGED: "true"},
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # another manager created it meanwhile
                return
            raise LaunchFailed(  # the engine answered, and refused
                f"the Docker network {name!r} does not exist and the engine refused to create "
                f"it: {exc.explanation or exc}. Create it yourself, or set "
                "BOTFLEET_DOCKER_NETWORK to an existing network or to `host`",
                code="network_unavailable",
            ) from exc

    def _name(self, spec: LaunchSpec) -> str:
        return f"{self.config.name_prefix}{spec.bot_id}-{spec.attempt}"

    def _create_args(self, spec: LaunchSpec) -> dict[str, Any]:
        """The container: the bot's whole environment (secrets too: only the container reads
        it), our labels, and the hardening policy in Docker's terms."""
        cfg = self.config
        args: dict[str, Any] = {
            "name": self._name(spec),
            "environment": spec.environment(),
            "labels": spec.workload_labels(),
            "detach": True,
            "init": True,  # a real PID 1 that forwards SIGTERM and reaps children
            "stop_signal": "SIGTERM",
            "ulimits": [Ulimit(name="nofile", soft=4096, hard=4096)],
            # The engine rotates the bot's output itself: size and count from the manager.
            "log_config": LogConfig(
                type="json-file",
                config={"max-size": str(cfg.log_file_max_bytes), "max-file": str(cfg.log_files)},
            ),
            **_hardening_args(cfg.hardening()),
        }
        if spec.state is not None:
            args["mounts"] = [
                Mount(target=STATE_MOUNT, source=self._ensure_volume(spec.state), type="volume")
            ]
        if _is_network_mode(cfg.network):
            args["network_mode"] = cfg.network
        else:
            args["network"] = cfg.network
        return args

    # ---- state volumes -----------------------------------------------------------------------

    def _volume_name(self, state: StateRef) -> str:
        return f"{self.config.name_prefix}state-{state.slug}"

    def _ensure_volume(self, state: StateRef) -> str:
        """The state's named volume, created (labelled, never with the key itself) if new."""
        name = self._volume_name(state)
        labels = {LABEL_MANAGED: "true", LABEL_USER_ID: state.user_id}
        self.client.volumes.create(name=name, driver="local", labels=labels)  # idempotent
        return name

    def state_dir(self, state: StateRef) -> str:
        return STATE_MOUNT

    def purge_state(self, state: StateRef) -> None:
        """Remove the volume, and first the ended containers that still mount it (their
        records are gone or going); a running one keeps it: OrchestratorError."""
        name = self._volume_name(state)
        with _engine_errors(f"removing the state volume {name}"):
            for summary in self.client.api.containers(all=True, filters={"volume": name}):
                container = self.client.containers.get(summary["Id"])
                if not _status(container).is_gone and container.status != "created":
                    raise OrchestratorError(f"container {container.short_id} still uses {name}")
                container.remove(force=True)
            try:
                self.client.volumes.get(name).remove()
            except docker.errors.NotFound:
                return

    # ---- watch and stop ----------------------------------------------------------------------

    def _get(self, runtime_ref: str) -> Container:
        with _engine_errors(f"reading container {runtime_ref[:12]}"):
            return self.client.containers.get(runtime_ref)

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        try:
            return _status(self._get(runtime_ref))
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """docker stop: the engine runs the stop ladder itself (SIGTERM, SIGKILL after the
        grace), so orchestrators/stopping.py is not needed here."""
        try:
            container = self._get(runtime_ref)
            with _engine_errors(f"stopping container {runtime_ref[:12]}"):
                if container.status == "created":  # never started: nothing to record
                    container.remove(force=True)
                    return WorkloadStatus(WorkloadState.NOT_FOUND)
                container.stop(timeout=max(0, round(grace_s)))
                container.reload()
        except WorkloadNotFound:
            return WorkloadStatus(WorkloadState.NOT_FOUND)
        return _status(container)

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        wanted = {LABEL_MANAGED: "true", **(labels or {})}
        filters = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        with _engine_errors("listing containers"):
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
                    status=_status(container),
                )
            )
        return workloads

    def remove(self, runtime_ref: str) -> None:
        try:
            container = self._get(runtime_ref)
        except WorkloadNotFound:
            return
        if not _status(container).is_gone and container.status != "created":
            raise OrchestratorError(f"container {runtime_ref[:12]} still runs; stop it first")
        with _engine_errors(f"removing container {runtime_ref[:12]}"):
            container.remove(v=True, force=container.status == "created")

    # ---- capabilities ------------------------------------------------------------------------

    @property
    def runtime_image(self) -> str | None:
        return self.config.default_image

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The container's last `tail` lines, capped; WorkloadNotFound once it was removed.
        The engine reads `tail` lines, which may be long: the caps bound what we answer."""
        container = self._get(runtime_ref)
        with _engine_errors(f"reading logs of {runtime_ref[:12]}"):
            raw: bytes = container.logs(stdout=True, stderr=True, tail=tail)
        return tail_text(raw, tail=tail, limits=self.config.log_limits())

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """Polls `logs(since=…, timestamps=True)`: a blocking `follow=True` stream would hold
        a thread for the stream's whole life."""
        container = self._get(runtime_ref)
        first = self.logs(runtime_ref, bot_id=bot_id, tail=tail) if tail > 0 else ""
        return _ContainerFollower(container, first, self.config.log_limits())

    def check_health(self) -> None:
        with _engine_errors("pinging the Docker Engine"):
            self.client.ping()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _ContainerFollower(LogFollower):
    """New output of a container since the last read, by timestamp (the engine's `since` has
    a precision of its own, so lines at or before the last one seen are skipped)."""

    def __init__(self, container: Container, first: str, limits: LogLimits) -> None:
        self._container = container
        self._first: bytes | None = (first + "\n").encode() if first else b""
        self._last = time.time()
        self._last_stamp = ""
        self._limits = limits

    def read(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
        with _engine_errors(f"following logs of {self._container.id[:12]}"):
            raw: bytes = self._container.logs(
                stdout=True, stderr=True, timestamps=True, since=max(0.0, self._last - 1.0)
            )
        out = bytearray()
        for line in raw.splitlines(keepends=True)[-10_000:]:
            stamp, _, text = line.partition(b" ")
            key = stamp.decode(errors="replace").rstrip("Z").ljust(30, "0")
            if key <= self._last_stamp:
                continue
            self._last_stamp = key
            out += text
            if len(out) > self._limits.max_bytes:
                break
        if out:
            self._last = time.time()
        return bytes(out)
