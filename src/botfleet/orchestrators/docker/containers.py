"""A bot's container: what it is created with, and its state in the shared vocabulary.

Created with the bot's whole environment (secrets too: only the container reads it), labels that
identify botfleet, the bot and the user (never the environment), an init as PID 1, the engine's
own log rotation, a capped /dev/shm, and the shared hardening policy (orchestrators/hardening.py:
a capped tmpfs /tmp among it) in Docker's terms. An `exec` kind's argv replaces the image's
entrypoint (the runtime image's is `python -m botfleet.runtime`), under the same settings.
"""

from __future__ import annotations

from typing import Any

from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit

from botfleet.orchestrators.base import STATE_MOUNT, LaunchSpec, WorkloadState, WorkloadStatus
from botfleet.orchestrators.docker.config import DockerOrchestratorConfig
from botfleet.orchestrators.hardening import Hardening


def container_status(container: Container) -> WorkloadStatus:
    """Docker's container state, in the shared vocabulary."""
    state: dict[str, Any] = container.attrs.get("State", {})
    status = state.get("Status", "")
    if status == "created":
        return WorkloadStatus(WorkloadState.PENDING)
    if status in ("running", "paused", "restarting"):
        return WorkloadStatus(WorkloadState.RUNNING)
    if status in ("exited", "dead"):
        code = state.get("ExitCode")
        if state.get("OOMKilled"):  # the reason every backend gives an OOM kill
            oom = "out of memory (OOMKilled)"
            return WorkloadStatus(WorkloadState.EXITED, code, detail=oom, reason="out_of_memory")
        return WorkloadStatus(WorkloadState.EXITED, exit_code=code, detail=state.get("Error", ""))
    if status == "removing":
        return WorkloadStatus(WorkloadState.EXITED, exit_code=state.get("ExitCode"))
    return WorkloadStatus(WorkloadState.UNKNOWN, detail=f"docker state {status!r}")


def still_runs(container: Container) -> bool:
    """Started and not ended: removing it would lose a live bot (one never started may go)."""
    return not container_status(container).is_gone and container.status != "created"


def hardening_args(policy: Hardening) -> dict[str, Any]:
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


def create_args(
    config: DockerOrchestratorConfig, spec: LaunchSpec, *, name: str, state_volume: str | None
) -> dict[str, Any]:
    """`containers.create` arguments of one attempt, but its network (network.py's)."""
    args: dict[str, Any] = {
        "name": name,
        "environment": spec.environment(),
        "labels": spec.workload_labels(),
        "detach": True,
        "init": True,  # a real PID 1 that forwards SIGTERM and reaps children
        "stop_signal": "SIGTERM",
        "ulimits": [Ulimit(name="nofile", soft=4096, hard=4096)],
        # The engine rotates the bot's output itself, as it writes: size and count from the
        # manager (BOTFLEET_LOG_FILE_MAX_BYTES, BOTFLEET_LOG_FILES).
        "log_config": LogConfig(
            type="json-file",
            config={"max-size": str(config.log_file_max_bytes), "max-file": str(config.log_files)},
        ),
        "shm_size": f"{config.shm_mb}m",  # a private /dev/shm of its own, capped
        **hardening_args(config.hardening().with_resources(spec.resources)),
    }
    if spec.command is not None:  # an `exec` kind: its argv instead of the image's entrypoint
        args["entrypoint"] = list(spec.command)
        args["command"] = []
    if state_volume is not None:
        args["mounts"] = [Mount(target=STATE_MOUNT, source=state_volume, type="volume")]
    return args
