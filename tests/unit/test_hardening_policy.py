"""Docker and Nomad render one hardening policy for a bot's container, from their own settings;
pure (no engine is asked)."""

from __future__ import annotations

from botfleet.orchestrators.base import LaunchSpec
from botfleet.orchestrators.docker import DockerOrchestrator, DockerOrchestratorConfig
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig


def test_docker_and_nomad_render_one_hardening_policy() -> None:
    """Both engines confine a bot alike, with the limits from their own settings."""
    limits = {"pids_limit": 99, "memory_mb": 300, "tmpfs_mb": 32}
    docker_cfg = DockerOrchestratorConfig(cpus=0.5, user="20001:20001", **limits)
    nomad_cfg = NomadOrchestratorConfig(cpu_mhz=500, docker_user="20001:20001", **limits)
    assert docker_cfg.hardening() == nomad_cfg.hardening()

    launch = LaunchSpec(
        bot_id="hard", user_id="u", attempt=1, image=None, env={"A": "1"},
        secret_env={"BOTFLEET_BOT_TOKEN": "tok-hard"},
    )  # fmt: skip
    args = DockerOrchestrator(docker_cfg)._create_args(launch)
    assert (args["user"], args["read_only"], args["cap_drop"]) == ("20001:20001", True, ["ALL"])
    assert args["security_opt"] == ["no-new-privileges:true"]
    assert (args["pids_limit"], args["mem_limit"], args["nano_cpus"]) == (99, "300m", 5 * 10**8)
    assert "size=32m" in args["tmpfs"]["/tmp"]
    assert args["environment"] == {"A": "1", "BOTFLEET_BOT_TOKEN": "tok-hard"}
    assert "tok-hard" not in str(args["labels"])

    job = NomadOrchestrator(nomad_cfg).job_spec(launch)
    [task] = job["TaskGroups"][0]["Tasks"]
    driver = task["Config"]
    assert (task["User"], driver["readonly_rootfs"], driver["cap_drop"]) == (
        "20001:20001",
        True,
        ["ALL"],
    )
    assert driver["security_opt"] == ["no-new-privileges"]
    assert (driver["pids_limit"], task["Resources"]) == (99, {"CPU": 500, "MemoryMB": 300})
    assert driver["mount"][0]["tmpfs_options"] == {"size": 32 * 2**20}
    assert task["Env"] == {"A": "1"} and "tok-hard" not in str(job)
