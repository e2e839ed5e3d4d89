"""A kind's `resources` replace its bots' CPU and memory on every backend; pure (what each
backend would ask its engine for). On real engines: tests/e2e/test_node_bot.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botfleet.orchestrators.base import LaunchSpec, Resources
from botfleet.orchestrators.docker.config import DockerOrchestratorConfig
from botfleet.orchestrators.docker.containers import hardening_args
from botfleet.orchestrators.nomad.config import MHZ_PER_CPU, NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import build_job
from botfleet.orchestrators.process import ProcessOrchestratorConfig
from botfleet.orchestrators.process.containment import BotCgroups

OWN = Resources(cpu=0.5, memory_mb=300)


def test_a_kinds_resources_are_read_from_its_document() -> None:
    assert Resources.of({"cpu": 2, "memory_mb": 1024}) == Resources(2.0, 1024)
    assert Resources.of({"memory_mb": 64}) == Resources(None, 64)
    assert Resources.of({}) is None and Resources.of(None) is None


def test_docker_asks_for_the_kinds_cpu_and_memory() -> None:
    policy = DockerOrchestratorConfig().hardening()
    args = hardening_args(policy.with_resources(OWN))
    assert (args["nano_cpus"], args["mem_limit"]) == (500_000_000, "300m")
    # Only what the kind sets changes; the rest of the policy stays.
    half = hardening_args(policy.with_resources(Resources(memory_mb=300)))
    assert half["nano_cpus"] == int((policy.cpus or 0) * 1e9) and half["mem_limit"] == "300m"
    assert hardening_args(policy.with_resources(None)) == hardening_args(policy)


def test_nomad_asks_for_the_kinds_cpu_and_memory() -> None:
    def resources(own: Resources | None) -> dict[str, Any]:
        cfg = NomadOrchestratorConfig(address="http://127.0.0.1:1")
        spec = LaunchSpec(bot_id="b", user_id="u", attempt=1, image=None, env={}, resources=own)
        job = build_job(cfg, spec, job_id="botfleet-b-1", secret_names=[])
        task = job["TaskGroups"][0]["Tasks"][0]
        return dict(task["Resources"]) | {"memory": task["Config"].get("memory_hard_limit")}

    own = resources(OWN)
    assert (own["CPU"], own["MemoryMB"]) == (int(0.5 * MHZ_PER_CPU), 300)
    assert resources(None)["MemoryMB"] != 300


def test_a_process_bots_cgroup_gets_the_kinds_memory_and_a_cpu_cap(tmp_path: Path) -> None:
    config = ProcessOrchestratorConfig(data_dir=tmp_path, rlimit_as_mb=2048, cpu_weight=100)
    part = BotCgroups(config)
    limits = part.limits(OWN)
    assert (limits.memory_bytes, limits.cpu_max) == (300 << 20, 0.5)
    assert limits.cpu_weight == 100  # the weight among bots stays the operator's
    default = part.limits()
    assert (default.memory_bytes, default.cpu_max) == (2048 << 20, 0.0)
