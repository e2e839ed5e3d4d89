"""Disk per bot on the docker backend (issue 27, part 3): the container the backend creates has
a capped /tmp and a capped /dev/shm of the configured sizes, and a state volume cap the engine
cannot apply refuses the launch instead of running uncapped.

The fill runs in a container made with the backend's own create arguments (containers.py), its
command replaced by the attack; at most 200 MiB are written into memory-backed mounts. On main
/dev/shm was Docker's default 64 MiB whatever BOTFLEET_DOCKER_SHM_MB said, and a state volume
was never capped.
"""

from __future__ import annotations

import uuid

import docker
import pytest

from botfleet.orchestrators.base import LaunchFailed, LaunchSpec, StateRef, WorkloadState
from botfleet.orchestrators.docker import DockerOrchestrator, DockerOrchestratorConfig
from botfleet.orchestrators.docker.containers import container_status, create_args
from botfleet.orchestrators.docker.volumes import volume_name
from tests.support import RUNTIME_IMAGE

FILL = """
import errno, os
for place in ("/tmp", "/dev/shm"):
    written = 0
    try:
        with open(os.path.join(place, "fill"), "wb") as handle:
            while written < 200 << 20:
                handle.write(b"z" * (1 << 20))
                handle.flush()
                written += 1 << 20
        verdict = "wrote-all"
    except OSError as exc:
        verdict = errno.errorcode[exc.errno]
    print("FILL", place, verdict, written >> 20, flush=True)
"""


def _spec(**kwargs: object) -> LaunchSpec:
    return LaunchSpec(
        bot_id=f"disk-{uuid.uuid4().hex[:8]}",
        user_id="u",
        attempt=1,
        image=RUNTIME_IMAGE,
        env={},
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_container_filling_tmp_and_shm_stops_at_their_caps(docker_engine: None) -> None:
    config = DockerOrchestratorConfig(network="none", tmpfs_mb=16, shm_mb=24)
    spec = _spec()
    args = create_args(config, spec, name=f"botfleet-{spec.bot_id}", state_volume=None)
    engine = docker.from_env()
    container = engine.containers.create(
        RUNTIME_IMAGE,
        entrypoint=["/opt/botfleet/bin/python", "-c", FILL],
        network_mode="none",
        **args,
    )
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        text = container.logs().decode()
    finally:
        container.remove(force=True)
        engine.close()
    verdicts = {line.split()[1]: line.split()[2:] for line in text.splitlines() if "FILL" in line}
    assert verdicts == {"/tmp": ["ENOSPC", "16"], "/dev/shm": ["ENOSPC", "24"]}, text


def test_a_state_volume_cap_the_engine_cannot_apply_refuses_the_launch(
    docker_engine: None,
) -> None:
    """This engine's volumes are not on xfs with pquota (the only way the local driver caps
    a volume): a capped state_key launch fails with state_unavailable, never runs uncapped."""
    engine = docker.from_env()
    if "xfs" in str(engine.info().get("DriverStatus")):
        pytest.skip("this engine's storage is xfs: it may apply the cap")
    backend = DockerOrchestrator(DockerOrchestratorConfig(network="none", state_volume_mb=32))
    state = StateRef(user_id="u", key=f"capped-{uuid.uuid4().hex[:8]}")
    spec = _spec(state=state)
    try:
        with pytest.raises(LaunchFailed) as refused:
            backend.launch(spec)
        assert refused.value.code == "state_unavailable"
        assert "BOTFLEET_DOCKER_STATE_VOLUME_MB" in str(refused.value)
        assert backend.list_workloads({"botfleet.bot_id": spec.bot_id}) == []
    finally:
        for workload in backend.list_workloads({"botfleet.bot_id": spec.bot_id}):
            backend.stop(workload.runtime_ref, grace_s=0)
            backend.remove(workload.runtime_ref)
        backend.purge_state(state)
        backend.close()
        engine.close()
    assert not engine.volumes.list(filters={"name": volume_name("botfleet-", state)})


HOG = """
import subprocess, sys, time
hold = "b = bytearray(100 << 20); import time; time.sleep(30)"
child = subprocess.Popen([sys.executable, "-c", hold])
held = bytearray(100 << 20)
child.wait()
"""


def test_a_container_over_its_memory_ends_out_of_memory(docker_engine: None) -> None:
    """Two processes of 100 MiB against a 64 MiB limit: the engine's OOM kill is the same
    reason every backend gives (`out_of_memory`), not a plain exit."""
    config = DockerOrchestratorConfig(network="none", memory_mb=64)
    spec = _spec()
    args = create_args(config, spec, name=f"botfleet-{spec.bot_id}", state_volume=None)
    engine = docker.from_env()
    container = engine.containers.create(
        RUNTIME_IMAGE,
        entrypoint=["/opt/botfleet/bin/python", "-c", HOG],
        network_mode="none",
        **args,
    )
    try:
        container.start()
        container.wait(timeout=60)
        container.reload()
        status = container_status(container)
    finally:
        container.remove(force=True)
        engine.close()
    assert (status.state, status.reason) == (WorkloadState.EXITED, "out_of_memory"), status
