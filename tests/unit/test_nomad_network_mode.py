"""A Nomad docker task gets no host network unless the operator asks for it; pure (the job spec
alone)."""

from __future__ import annotations

from botfleet.orchestrators import LaunchSpec
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig


def test_docker_tasks_get_no_host_network_unless_asked() -> None:
    spec = LaunchSpec(bot_id="b1", user_id="u1", attempt=1, image=None, env={})
    default = NomadOrchestrator(NomadOrchestratorConfig(driver="docker")).job_spec(spec)
    [task] = default["TaskGroups"][0]["Tasks"]
    assert "network_mode" not in task["Config"]
    opted = NomadOrchestrator(NomadOrchestratorConfig(driver="docker", network_mode="host"))
    assert opted.job_spec(spec)["TaskGroups"][0]["Tasks"][0]["Config"]["network_mode"] == "host"
