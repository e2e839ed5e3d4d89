"""A bot's state on Nomad: the job mounts the state's Docker volume at /state, the key is in
neither Meta nor the volume's name, and the exec driver refuses state; pure (the job spec
alone)."""

from __future__ import annotations

import json

import pytest

from botfleet.orchestrators.base import StateRef


def test_nomad_job_mounts_the_state_volume_and_exec_refuses_state() -> None:
    """Nomad (docker driver): the job mounts the state's Docker volume at /state and no other
    writable path but /tmp; the key is in neither Meta nor the volume's name. `exec` has no
    state: the backend says so (POST /bots answers 422 `state_not_supported`)."""
    from botfleet.orchestrators.base import CapabilityNotSupported, LaunchSpec
    from botfleet.orchestrators.nomad.backend import NomadOrchestrator
    from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
    from botfleet.orchestrators.nomad.jobspec import build_job

    state = StateRef("user-1", "secret-room-key")
    spec = LaunchSpec(bot_id="b1", user_id="user-1", attempt=1, image=None, env={}, state=state)
    cfg = NomadOrchestratorConfig(address="http://127.0.0.1:1", driver="docker")
    job = build_job(cfg, spec, job_id="botfleet-b1-1", secret_names=[])
    task = job["TaskGroups"][0]["Tasks"][0]
    mounts = {m["target"]: m for m in task["Config"]["mount"]}
    assert set(mounts) == {"/tmp", "/state"} and task["Config"]["readonly_rootfs"] is True
    assert mounts["/state"]["type"] == "volume" and mounts["/state"]["source"] == (
        f"botfleet-state-{state.slug}"
    )
    assert "secret-room-key" not in json.dumps(job)
    assert NomadOrchestrator(cfg).state_dir(state) == "/state"
    exec_backend = NomadOrchestrator(
        NomadOrchestratorConfig(address="http://127.0.0.1:1", driver="exec")
    )
    with pytest.raises(CapabilityNotSupported):
        exec_backend.state_dir(state)
