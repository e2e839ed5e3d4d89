"""One bot attempt's service and secret, as the Engine API (1.41) takes them.

The secret variables (`LaunchSpec.secret_env`: the token, the bot's secrets, a Redis password)
become ONE Docker secret per attempt, mounted in the task as a file readable by the bot's uid
alone (0400), and reach the runtime through its secret pipe (`BOTFLEET_SECRET_ENV_FD`,
botfleet.runtime.env): the service's entrypoint is a shell line that opens the file as
descriptor 3 and execs the image's own entrypoint (or an `exec` kind's argv) with the variable
pointing at it. Nothing secret is in the service's env, labels or command: `docker service
inspect` shows the secret's name, never its data.

Hardening is the shared policy (orchestrators/hardening.py) where the service API has a field
for it: the uid, a read-only root with a tmpfs /tmp, every capability dropped, an init, CPU,
memory and pids limits, a nofile ulimit. It has none for `no-new-privileges` (nor for tmpfs
mount options such as noexec): docs/how-to/swarm.md says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from docker.types import (
    ContainerSpec,
    DriverConfig,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)

from botfleet.orchestrators.base import (
    LABEL_ATTEMPT,
    LABEL_BOT_ID,
    LABEL_FLEET,
    LABEL_MANAGED,
    LABEL_USER_ID,
    STATE_MOUNT,
    LaunchSpec,
)
from botfleet.orchestrators.swarm.config import SwarmOrchestratorConfig

#: The secrets file, under /run/secrets/ in the task.
SECRET_FILE = "botfleet-env"
SECRET_PATH = f"/run/secrets/{SECRET_FILE}"
#: The service's entrypoint: the secrets file as descriptor 3 for the runtime's secret pipe,
#: then the real argv ("$@"). `$0` is the shell's name in its messages.
LAUNCHER = f'exec 3<{SECRET_PATH} && BOTFLEET_SECRET_ENV_FD=3 exec "$@"'
NOFILE = 4096


def service_name(config: SwarmOrchestratorConfig, spec: LaunchSpec) -> str:
    """The attempt's service (and secret) name: a second launch of one attempt is refused."""
    return f"{config.name_prefix}{spec.bot_id}-{spec.attempt}"


def secret_labels(spec: LaunchSpec) -> dict[str, str]:
    """Labels of the attempt's secret: whose it is, never what it holds."""
    return {
        LABEL_MANAGED: "true",
        LABEL_FLEET: spec.fleet,
        LABEL_BOT_ID: spec.bot_id,
        LABEL_ATTEMPT: str(spec.attempt),
    }


def secret_data(spec: LaunchSpec) -> bytes:
    """What the runtime reads from its secret pipe: one JSON object of strings."""
    return json.dumps(dict(spec.secret_env)).encode()


def image_argv(image_attrs: dict[str, Any]) -> list[str]:
    """What the image runs by itself (ENTRYPOINT + CMD), from `docker image inspect`."""
    config = image_attrs.get("Config") or {}
    return [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]


def entrypoint(argv: Sequence[str]) -> dict[str, list[str]]:
    """ContainerSpec Command and Args that run `argv` with the secret pipe open: set
    explicitly, or the arguments would go to the image's ENTRYPOINT."""
    return {"command": ["/bin/sh", "-c", LAUNCHER, "botfleet"], "args": list(argv)}


def _resources(config: SwarmOrchestratorConfig, spec: LaunchSpec) -> Resources:
    policy = config.hardening().with_resources(spec.resources)
    cpu = int(policy.cpus * 1e9) if policy.cpus else None
    memory = policy.memory_mb * 1024 * 1024 if policy.memory_mb else None
    reserve = config.reserve_resources
    resources = Resources(
        cpu_limit=cpu,
        mem_limit=memory,
        cpu_reservation=cpu if reserve else None,
        mem_reservation=memory if reserve else None,
    )
    if policy.pids_limit:  # API 1.41; the SDK has no argument for it
        resources.setdefault("Limits", {})["Pids"] = policy.pids_limit
    return resources


def _mounts(config: SwarmOrchestratorConfig, spec: LaunchSpec, volume: str | None) -> list[Mount]:
    policy = config.hardening()
    mounts = [Mount("/tmp", None, type="tmpfs", tmpfs_size=policy.tmpfs_bytes, tmpfs_mode=0o1777)]
    if volume is not None and spec.state is not None:
        labels = {LABEL_MANAGED: "true", LABEL_USER_ID: spec.state.user_id}
        mounts.append(Mount(STATE_MOUNT, volume, type="volume", labels=labels))
    return mounts


def create_args(
    config: SwarmOrchestratorConfig,
    spec: LaunchSpec,
    *,
    image_id: str,
    argv: Sequence[str],
    secret_id: str,
    constraints: Sequence[str],
    state_volume: str | None,
) -> dict[str, Any]:
    """`APIClient.create_service` arguments of one attempt: replicas 1, restart policy none
    (the manager owns restarts), the image by id, hardened, its secret mounted 0400."""
    uid, gid = config.uid_gid
    policy = config.hardening()
    container = ContainerSpec(
        image_id,
        **entrypoint(argv),
        env=[f"{k}={v}" for k, v in spec.env.items()],
        labels=spec.workload_labels(),  # on the container too: `docker ps` on a node tells
        user=policy.user,
        read_only=policy.read_only_root,
        cap_drop=list(policy.cap_drop),
        init=True,  # a real PID 1 that forwards SIGTERM and reaps children
        stop_signal="SIGTERM",
        stop_grace_period=int(config.stop_grace_s * 1e9),
        mounts=_mounts(config, spec, state_volume),
        secrets=[
            SecretReference(
                secret_id,
                service_name(config, spec),
                filename=SECRET_FILE,
                uid=uid,
                gid=gid,
                mode=0o400,
            )
        ],
    )
    container["Ulimits"] = [{"Name": "nofile", "Soft": NOFILE, "Hard": NOFILE}]  # API 1.41
    template = TaskTemplate(
        container,
        resources=_resources(config, spec),
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=list(constraints)) if constraints else None,
        # The node engine rotates the bot's output as it writes: size and count from the
        # manager (BOTFLEET_LOG_FILE_MAX_BYTES, BOTFLEET_LOG_FILES).
        log_driver=DriverConfig(
            "json-file",
            {"max-size": str(config.log_file_max_bytes), "max-file": str(config.log_files)},
        ),
        networks=[{"Target": network} for network in config.networks],
    )
    return {
        "task_template": template,
        "name": service_name(config, spec),
        "labels": spec.workload_labels(),
        "mode": ServiceMode("replicated", replicas=1),
        # No virtual IP: it needs IPVS, which many kernels lack; bots publish no ports.
        "endpoint_spec": EndpointSpec(mode="dnsrr"),
    }
