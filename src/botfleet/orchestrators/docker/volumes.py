"""Bots' state volumes: a bot with a `state_key` gets a named volume
(`<prefix>state-<hash of user and key>`) mounted at /state, its one writable path besides /tmp.

A new volume takes the ownership of the image's /state (the runtime image makes it 0700 for uid
10001), so another image needs a /state its user may write.

Its size is capped only with `state_volume_mb` and an engine whose volumes folder is on xfs
mounted with pquota (the local driver's `size` option, a project quota); the local driver has
no other way to cap a volume, and an engine without quotas refuses the option: the launch then
fails with state_unavailable, never runs uncapped. A volume made before the cap was set keeps
no cap.
"""

from __future__ import annotations

import docker
import docker.errors

from botfleet.orchestrators.base import (
    LABEL_MANAGED,
    LABEL_USER_ID,
    LaunchFailed,
    OrchestratorError,
    StateRef,
)
from botfleet.orchestrators.docker.containers import still_runs
from botfleet.orchestrators.docker.engine import engine_errors


def volume_name(prefix: str, state: StateRef) -> str:
    return f"{prefix}state-{state.slug}"


def ensure_volume(
    client: docker.DockerClient, name: str, state: StateRef, *, size_mb: int = 0
) -> str:
    """The state's named volume, created (labelled, never with the key itself, capped at
    `size_mb` MiB when set) if new."""
    labels = {LABEL_MANAGED: "true", LABEL_USER_ID: state.user_id}
    options = {"size": f"{size_mb}m"} if size_mb else None
    try:
        client.volumes.create(name=name, driver="local", driver_opts=options, labels=labels)
    except docker.errors.APIError as exc:  # idempotent otherwise
        if size_mb and "quota" in str(exc.explanation or exc):
            raise LaunchFailed(
                f"the Docker Engine cannot cap the state volume at {size_mb} MiB "
                f"(BOTFLEET_DOCKER_STATE_VOLUME_MB): {exc.explanation or exc}; it needs "
                "/var/lib/docker/volumes on xfs mounted with pquota, or the setting at 0",
                code="state_unavailable",
            ) from exc
        raise
    return name


def purge_volume(client: docker.DockerClient, name: str) -> None:
    """Remove the volume, and first the ended containers that still mount it (their records
    are gone or going); a running one keeps it: OrchestratorError."""
    with engine_errors(f"removing the state volume {name}"):
        for summary in client.api.containers(all=True, filters={"volume": name}):
            # The reconciler removes ended containers too: one gone meanwhile is no refusal.
            try:
                container = client.containers.get(summary["Id"])
                if still_runs(container):
                    raise OrchestratorError(f"container {container.short_id} still uses {name}")
                container.remove(force=True)
            except docker.errors.NotFound:
                continue
        try:
            client.volumes.get(name).remove()
        except docker.errors.NotFound:
            return
