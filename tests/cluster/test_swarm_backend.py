"""What only the swarm backend does, on a real three-node Swarm (tests/cluster/swarm_nodes.py):
the secrets file and its pipe (an `exec` kind's too), an OOM kill, the image by id and an image
no node holds, placement constraints, a `state_key` pinned to its node across attempts and purged
there, logs from the node's own engine with a follow that ends, and the swarm-only ways (no node
engine): `service logs`, and a stop that scales the service to 0 and still reads the exit code.
The contract every backend keeps is tests/cluster/test_swarm_contract.py."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterator

import docker.errors
import pytest
from docker.models.containers import Container

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    Placement,
    Resources,
    StateRef,
    WorkloadState,
)
from botfleet.orchestrators.docker.volumes import volume_name
from botfleet.orchestrators.swarm import SwarmOrchestrator
from botfleet.orchestrators.swarm.logs import ServiceLogs
from botfleet.orchestrators.swarm.nodes import state_label
from botfleet.orchestrators.swarm.service_spec import LAUNCHER, SECRET_PATH
from tests.cluster.swarm_nodes import SwarmCluster
from tests.cluster.test_swarm_contract import swarm_config, swarm_harness
from tests.integration.backends.test_backend_contract import (
    IDLE,
    IGNORES_SIGTERM,
    SECRET,
    Harness,
)
from tests.support import RedisServer, wait_until

#: An `exec` kind's argv: what it got through the secret pipe, the file's mode and owner, and
#: what the hardening left it (its uid, no capabilities, a read-only root).
EXEC_PROBE = f"""
import hashlib, json, os
secrets = json.load(open(int(os.environ["BOTFLEET_SECRET_ENV_FD"])))
st = os.stat("{SECRET_PATH}")
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
try:
    open("/root-is-writable", "w")
    root = "writable"
except OSError:
    root = "read-only"
print("probe", json.dumps({{
    "secret_names": sorted(secrets),
    "api_key_sha256": hashlib.sha256(secrets["BOTFLEET_BOT_SECRETS"].encode()).hexdigest(),
    "mode": oct(st.st_mode & 0o777), "owner": st.st_uid, "uid": os.getuid(),
    "cap_eff": status["CapEff"].strip(), "root": root,
}}))
"""


@pytest.fixture
def harness(swarm_cluster: SwarmCluster, swarm_redis: RedisServer) -> Iterator[Harness]:
    made = swarm_harness(swarm_cluster, swarm_redis.url)
    yield made
    made.close()


def node_of(backend: SwarmOrchestrator, ref: str) -> str:
    view = backend.reader.view(ref)
    assert view is not None and view.node is not None
    return str(view.node["Description"]["Hostname"])


def ended(backend: SwarmOrchestrator, ref: str) -> None:
    wait_until(lambda: backend.inspect(ref).is_gone, timeout=30, what=f"the end of {ref}")


def test_secrets_arrive_through_a_0400_file_even_for_an_exec_kind(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    backend = harness.backend
    spec = harness.spec(IDLE)
    exec_kind = dataclasses.replace(spec, command=("/opt/botfleet/bin/python", "-c", EXEC_PROBE))
    ref = harness.launch(exec_kind)
    ended(backend, ref)
    assert backend.inspect(ref).exit_code == 0
    logs = backend.logs(ref, bot_id=spec.bot_id, tail=5)
    assert (
        '"secret_names": ["BOTFLEET_BOT_SECRETS", "BOTFLEET_BOT_TOKEN", "BOTFLEET_REDIS_URL"]'
        in logs
    )
    arrived = hashlib.sha256(spec.secret_env["BOTFLEET_BOT_SECRETS"].encode()).hexdigest()
    assert f'"api_key_sha256": "{arrived}"' in logs and '"mode": "0o400"' in logs
    assert (
        '"owner": 10001, "uid": 10001, "cap_eff": "0000000000000000", "root": "read-only"' in logs
    )

    service = swarm_cluster.manager_client.api.inspect_service(ref)["Spec"]
    container = service["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == swarm_cluster.image_id  # by id: no node tries a registry
    assert container["Command"] == ["/bin/sh", "-c", LAUNCHER, "botfleet"]
    assert container["Args"] == list(exec_kind.command or ())
    assert SECRET not in str(service) and "BOTFLEET_BOT_TOKEN" not in str(service)


def test_a_bot_killed_for_memory_is_out_of_memory(harness: Harness) -> None:
    """Swarm's task says only "exit (137)": the node's engine says OOMKilled."""
    hog = ("/opt/botfleet/bin/python", "-c", "x = bytearray(300 * 1024 * 1024)")
    small = Resources(memory_mb=32)
    spec = dataclasses.replace(harness.spec(IDLE), command=hog, resources=small)
    ref = harness.launch(spec)
    ended(harness.backend, ref)
    status = harness.backend.inspect(ref)
    assert (status.exit_code, status.reason) == (137, "out_of_memory"), status
    [listed] = harness.backend.list_workloads({LABEL_BOT_ID: spec.bot_id})
    assert listed.status == status


def test_an_image_the_engine_or_the_node_lacks_is_image_not_found(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    """Not on the manager's engine: refused at once. On the manager's node only, and the bot
    placed elsewhere: Swarm rejects the task (never retried), and the bot says why."""
    spec = harness.spec(IDLE)
    with pytest.raises(LaunchFailed) as missing:
        harness.backend.launch(dataclasses.replace(spec, image="botfleet-none:never"))
    assert missing.value.code == "image_not_found"

    n1 = swarm_cluster.nodes["n1"].client
    draft = n1.containers.create(swarm_cluster.image_id, command=["true"], network_mode="none")
    only_n1 = n1.api.commit(draft.id, repository="only-on-n1", tag=uuid.uuid4().hex[:8])["Id"]
    draft.remove()
    try:
        elsewhere = Placement(constraints=("node.hostname!=n1",))
        ref = harness.launch(dataclasses.replace(spec, image=only_n1, placement=elsewhere))
        ended(harness.backend, ref)
        status = harness.backend.inspect(ref)
        assert (status.reason, status.exit_code) == ("image_not_found", None), status
        assert "No such image" in status.detail
    finally:
        n1.images.remove(only_n1, force=True)


def test_placement_constraints_and_node_labels_are_honoured(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    key = f"test-{uuid.uuid4().hex[:8]}"
    swarm_cluster.label_node("n3", key, "yes")
    labelled = dataclasses.replace(
        harness.spec(IDLE), placement=Placement(node_labels={key: "yes"})
    )
    nowhere = Placement(constraints=(f"node.labels.{key}==nowhere",))
    unplaceable = dataclasses.replace(harness.spec(IDLE), placement=nowhere)
    ref, stuck = harness.launch(labelled), harness.launch(unplaceable)
    wait_until(lambda: harness.backend.inspect(ref).state is WorkloadState.RUNNING, timeout=30)
    assert node_of(harness.backend, ref) == "n3"
    status = wait_until(  # Swarm's reason comes with its first scheduling pass
        lambda: (s := harness.backend.inspect(stuck)).detail and s, timeout=30, what="a reason"
    )
    assert status.state is WorkloadState.PENDING
    assert "no suitable node (scheduling constraints not satisfied" in status.detail
    stopped = harness.backend.stop(stuck, grace_s=1)  # what a start timeout does
    assert stopped.is_gone and stopped.detail.startswith("never started: no suitable node")


def test_a_state_key_stays_on_its_node_across_attempts_and_is_purged_there(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    backend = harness.backend
    state = StateRef("user-state", f"key-{uuid.uuid4().hex[:8]}")

    def with_state(note: str) -> LaunchSpec:
        spec = harness.spec({"silent": True, "finish_after_s": 0.3, "state_note": note})
        env = {**spec.env, "BOTFLEET_STATE_DIR": backend.state_dir(state)}
        return dataclasses.replace(spec, state=state, env=env)

    first, second = with_state("one"), with_state("two")  # a relaunch: the same state
    refs = []
    for attempt in (first, second):
        refs.append(harness.launch(attempt))
        ended(backend, refs[-1])
    [home] = {node_of(backend, ref) for ref in refs}
    assert "demo bot state before: [one;]" in backend.logs(refs[1], bot_id="", tail=20)
    nodes = swarm_cluster.manager_client.api.nodes()
    holders = [n for n in nodes if state_label(backend.config, state) in n["Spec"]["Labels"]]
    assert [n["Description"]["Hostname"] for n in holders] == [home]

    engine = swarm_cluster.nodes[home].client
    volume = volume_name(backend.config.name_prefix, state)
    engine.volumes.get(volume)  # it exists on its node
    for ref in refs:
        backend.remove(ref)
    backend.purge_state(state)
    with pytest.raises(docker.errors.NotFound):
        engine.volumes.get(volume)
    nodes = swarm_cluster.manager_client.api.nodes()
    assert not [n for n in nodes if state_label(backend.config, state) in n["Spec"]["Labels"]]
    backend.purge_state(state)  # nothing left: no error


def test_logs_come_from_the_node_engine_and_a_follow_ends_with_the_task(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    backend = harness.backend
    spec = harness.spec({"silent": True, "finish_after_s": 1.5})
    ref = harness.launch(spec)
    follower = backend.follow_logs(ref, bot_id=spec.bot_id, tail=10)  # before it even started
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # what the manager does (services/logs.py: follow)
        seen += follower.read()
        if backend.inspect(ref).is_gone:
            seen += follower.read()  # what it wrote last
            break
        time.sleep(0.2)
    follower.close()
    assert backend.inspect(ref).is_gone, "the follow ended because the task ended"
    text = seen.decode()
    assert f"demo bot {spec.bot_id} started" in text
    assert "demo bot finished on its own with exit code 0" in text
    source = backend.reader.log_source(ref, backend.config.log_limits())
    assert isinstance(source, Container), "read on the node's own engine"

    bogus = {name: "unix:///nonexistent/engine.sock" for name in swarm_cluster.nodes}
    cut_off = SwarmOrchestrator(swarm_config(swarm_cluster, node_engines=bogus))
    with pytest.raises(BackendUnavailable, match=f"Docker Engine of node {node_of(backend, ref)}"):
        cut_off.logs(ref, bot_id=spec.bot_id, tail=5)
    cut_off.close()


def test_without_node_engines_logs_and_stops_go_through_the_swarm(
    harness: Harness, swarm_cluster: SwarmCluster
) -> None:
    """`service logs`, never followed; a stop scales the service to 0 (Swarm applies the stop
    grace the task was created with) and the exit code outlives the task Swarm deletes."""
    swarm_only = SwarmOrchestrator(swarm_config(swarm_cluster, node_engines={}, stop_grace_s=1))
    harness.on_close.append(swarm_only.close)
    on_n2 = Placement(constraints=("node.hostname==n2",))  # not the manager's own node
    spec = dataclasses.replace(harness.spec(IGNORES_SIGTERM), placement=on_n2)
    ref = harness.launch(spec)
    wait_until(
        lambda: f"demo bot {spec.bot_id} started" in swarm_only.logs(ref, bot_id="", tail=20),
        timeout=30,
        what="the bot's start, through the swarm's logs",
    )
    assert isinstance(
        swarm_only.reader.log_source(ref, swarm_only.config.log_limits()), ServiceLogs
    )
    began = time.monotonic()
    status = swarm_only.stop(ref, grace_s=30)  # the task's own grace (1 s) applies
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 137), status
    assert time.monotonic() - began < 15
    api = swarm_cluster.manager_client.api
    assert api.inspect_service(ref)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    wait_until(lambda: not api.tasks(filters={"service": ref}), timeout=30, what="the deletion")
    assert swarm_only.inspect(ref) == status, "the exit code outlives the task"
    [listed] = swarm_only.list_workloads({LABEL_BOT_ID: spec.bot_id})
    assert listed.status == status
    secrets = api.inspect_service(ref)["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    swarm_only.remove(ref)
    assert swarm_only.inspect(ref).state is WorkloadState.NOT_FOUND
    with pytest.raises(docker.errors.NotFound):
        api.inspect_secret(secrets[0]["SecretID"])
