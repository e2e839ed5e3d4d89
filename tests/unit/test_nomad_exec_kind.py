"""An `exec` kind on Nomad: its argv replaces the runtime command, whatever the task driver;
pure (the job spec alone). End to end through the stand-in: tests/e2e/test_node_bot.py."""

from __future__ import annotations

from botfleet.orchestrators.base import LaunchSpec
from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import build_job

ARGV = ("node", "/opt/bot/main.mjs", "--quiet")


def _config(driver: str, command: tuple[str, ...] | None) -> dict[str, object]:
    cfg = NomadOrchestratorConfig(
        address="http://127.0.0.1:1", driver=driver, command=["python3", "-m", "botfleet.runtime"]
    )
    spec = LaunchSpec(
        bot_id="b1", user_id="u1", attempt=1, image="team/bot:1", env={}, command=command
    )
    job = build_job(cfg, spec, job_id="botfleet-b1-1", secret_names=[])
    config: dict[str, object] = job["TaskGroups"][0]["Tasks"][0]["Config"]
    return config


def test_the_docker_driver_runs_the_kinds_argv_as_the_entrypoint() -> None:
    config = _config("docker", ARGV)
    assert config["image"] == "team/bot:1"
    # The image's own entrypoint and command are both set aside: nothing is appended to argv.
    assert config["entrypoint"] == list(ARGV) and config["args"] == []
    # A Python bot keeps the image's entrypoint (the runtime).
    assert "entrypoint" not in _config("docker", None)


def test_the_exec_drivers_run_the_kinds_argv_instead_of_the_runtime() -> None:
    for driver in ("exec", "raw_exec"):
        assert _config(driver, ARGV) == {
            "command": "node",
            "args": ["/opt/bot/main.mjs", "--quiet"],
        }
        assert _config(driver, None) == {"command": "python3", "args": ["-m", "botfleet.runtime"]}
