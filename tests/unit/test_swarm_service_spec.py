"""One bot attempt's Swarm service and secret (orchestrators/swarm/service_spec.py): the secret
variables only in the secret, its file 0400 for the bot's uid, the entrypoint that hands it to
the runtime's secret pipe (run for real in tests/cluster/test_swarm_contract.py), and the docker
backend's hardening where the service API has fields for it."""

from __future__ import annotations

import json

from botfleet.orchestrators.base import STATE_MOUNT, LaunchSpec, Placement, Resources, StateRef
from botfleet.orchestrators.swarm import SwarmOrchestratorConfig
from botfleet.orchestrators.swarm.constraints import constraints_of
from botfleet.orchestrators.swarm.service_spec import (
    LAUNCHER,
    create_args,
    entrypoint,
    image_argv,
    secret_data,
    secret_labels,
)
from botfleet.runtime.env import RuntimeEnv

SECRET = "s3cr3t-never-in-the-service"
IMAGE_ID = "sha256:86bfd52ce4db16e989b16c068f59e7d376954349168c851c557cfb754abf0321"
RUNTIME_ARGV = ["/opt/botfleet/bin/python", "-m", "botfleet.runtime"]


def spec(**fields: object) -> LaunchSpec:
    rendered = RuntimeEnv(
        bot_id="b1",
        token=f"token-{SECRET}",
        callback_url="http://10.0.0.1:8080",
        redis_url=f"redis://bot:{SECRET}@10.0.0.1:6379/0",
        command_channel="bot_commands:b1",
        bot="demo",
        secrets={"api_key": SECRET},
    ).render()
    values: dict[str, object] = {
        "bot_id": "b1",
        "user_id": "u1",
        "attempt": 2,
        "image": None,
        "env": rendered.env,
        "secret_env": rendered.secret_env,
        "labels": {"team": "a"},
        "fleet": "f1",
        **fields,
    }
    return LaunchSpec(**values)  # type: ignore[arg-type]


def args_of(launch: LaunchSpec, config: SwarmOrchestratorConfig | None = None, **kw: object):
    return create_args(
        config or SwarmOrchestratorConfig(stop_grace_s=7),
        launch,
        image_id=IMAGE_ID,
        argv=RUNTIME_ARGV,
        secret_id="sec-id",
        constraints=kw.pop("constraints", []),  # type: ignore[arg-type]
        state_volume=kw.pop("state_volume", None),  # type: ignore[arg-type]
    )


def test_the_secret_variables_are_in_the_secret_alone() -> None:
    launch = spec()
    args = args_of(launch)
    shown = json.dumps(args)
    assert SECRET not in shown
    for name in ("BOTFLEET_BOT_TOKEN", "BOTFLEET_BOT_SECRETS", "BOTFLEET_REDIS_URL"):
        assert name not in shown
    assert json.loads(secret_data(launch)) == dict(launch.secret_env)
    assert SECRET not in json.dumps(secret_labels(launch))
    assert secret_labels(launch)["botfleet.bot_id"] == "b1"
    container = args["task_template"]["ContainerSpec"]
    assert container["Env"] == [f"{k}={v}" for k, v in launch.env.items()]
    [mounted] = container["Secrets"]
    assert mounted["File"] == {
        "Name": "botfleet-env",
        "UID": "10001",
        "GID": "10001",
        "Mode": 0o400,
    }
    assert (mounted["SecretID"], mounted["SecretName"]) == ("sec-id", "botfleet-b1-2")


def test_one_service_per_attempt_by_image_id_that_the_manager_restarts() -> None:
    args = args_of(spec())
    assert args["name"] == "botfleet-b1-2"
    assert args["mode"] == {"replicated": {"Replicas": 1}}  # the engine reads it any case
    template = args["task_template"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["ContainerSpec"]["Image"] == IMAGE_ID
    assert template["Networks"] == [{"Target": "host"}]
    assert args["endpoint_spec"] == {"Mode": "dnsrr"}  # no VIP: it needs IPVS
    assert args["labels"]["botfleet.label.team"] == "a"
    assert args["labels"]["botfleet.attempt"] == "2"
    assert template["LogDriver"]["Options"] == {"max-size": "10485760", "max-file": "3"}


def test_the_entrypoint_is_explicit_and_runs_the_images_own_or_an_exec_kinds_argv() -> None:
    image = {"Config": {"Entrypoint": RUNTIME_ARGV[:1], "Cmd": RUNTIME_ARGV[1:]}}
    assert image_argv(image) == RUNTIME_ARGV
    assert image_argv({"Config": {"Entrypoint": None, "Cmd": None}}) == []
    container = args_of(spec())["task_template"]["ContainerSpec"]
    assert container["Command"] == ["/bin/sh", "-c", LAUNCHER, "botfleet"]
    assert container["Args"] == RUNTIME_ARGV
    assert entrypoint(["node", "bot.mjs"])["args"] == ["node", "bot.mjs"]


def test_hardening_where_the_service_api_has_fields() -> None:
    config = SwarmOrchestratorConfig(cpus=0.5, memory_mb=256, pids_limit=64, tmpfs_mb=32)
    template = args_of(spec(), config)["task_template"]
    container = template["ContainerSpec"]
    assert (container["User"], container["ReadOnly"], container["Init"]) == (
        "10001:10001",
        True,
        True,
    )
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["StopGracePeriod"] == int(config.stop_grace_s * 1e9)
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 4096, "Hard": 4096}]
    assert container["Mounts"] == [
        {"Target": "/tmp", "Source": None, "Type": "tmpfs", "ReadOnly": False,
         "TmpfsOptions": {"Mode": 0o1777, "SizeBytes": 32 * 1024 * 1024}},
    ]  # fmt: skip
    limits = template["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 500_000_000, "MemoryBytes": 256 * 1024 * 1024, "Pids": 64}
    assert "Reservations" not in template["Resources"]


def test_a_bots_own_resources_and_reservations() -> None:
    config = SwarmOrchestratorConfig(reserve_resources=True)
    launch = spec(resources=Resources(cpu=2.0, memory_mb=1024))
    resources = args_of(launch, config)["task_template"]["Resources"]
    expected = {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1024 * 1024 * 1024}
    assert resources["Reservations"] == expected
    assert resources["Limits"] == {**expected, "Pids": 256}


def test_placement_and_the_state_volume() -> None:
    state = StateRef("u1", "key")
    launch = spec(state=state, placement=Placement(node_labels={"zone": "a"}))
    constraints = [*constraints_of(launch.placement), "node.labels.botfleet-state.x==true"]
    args = args_of(launch, constraints=constraints, state_volume="botfleet-state-x")
    template = args["task_template"]
    assert template["Placement"] == {"Constraints": constraints}
    [_, volume] = template["ContainerSpec"]["Mounts"]
    assert (volume["Target"], volume["Source"], volume["Type"]) == (
        STATE_MOUNT,
        "botfleet-state-x",
        "volume",
    )
    assert volume["VolumeOptions"]["Labels"] == {
        "botfleet.managed": "true",
        "botfleet.user_id": "u1",
    }
    assert "Placement" not in args_of(spec())["task_template"]
