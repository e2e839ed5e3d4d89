"""The nomad backend against the Nomad stand-in (tests/nomad_standin/), with a real manager,
Redis, database and real bot processes.

The stand-in checks our requests and our handling of Nomad's documented answers; it is not Nomad.
The whole end-to-end suite of test_bots_e2e runs through it too (imported below).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from botfleet.manager.schemas.bounds import MAX_SECRETS_BYTES, json_size
from botfleet.orchestrators import BackendUnavailable, LaunchFailed, LaunchSpec
from botfleet.orchestrators.base import WorkloadState
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig, variable_path
from tests.e2e import test_bots_e2e
from tests.nomad_standin import StandIn
from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    transitions,
    wait_for_status,
    wait_until,
)

TOKEN = "nomad-acl-token-for-tests"
NAMESPACE = "botfleet"
REGION = "test-region"

# The end-to-end lifecycle suite, collected here again: it runs on this module's `manager`.
globals().update({k: v for k, v in vars(test_bots_e2e).items() if k.startswith("test_")})


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = StandIn(
        tmp_path_factory.mktemp("nomad"),
        token=TOKEN,
        namespace=NAMESPACE,
        region=REGION,
        datacenter="dc-test",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def manager(
    standin: StandIn, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    extra_env = {
        "BOTFLEET_NOMAD_ADDRESS": standin.url,
        "BOTFLEET_NOMAD_TOKEN": TOKEN,
        "BOTFLEET_NOMAD_NAMESPACE": NAMESPACE,
        "BOTFLEET_NOMAD_REGION": REGION,
        "BOTFLEET_NOMAD_DATACENTERS": '["dc-test"]',
        "BOTFLEET_NOMAD_DRIVER": "raw_exec",
        "BOTFLEET_NOMAD_COMMAND": json.dumps([sys.executable, "-m", "botfleet.runtime"]),
        "BOTFLEET_NOMAD_STOP_ON_CLIENT_AFTER_S": "1",  # a lost bot counts as ended in 6 s
    }
    root = tmp_path_factory.mktemp("nomad-manager")
    with running_manager(root, redis_server.url, backend="nomad", extra_env=extra_env) as instance:
        yield instance


def _bot_token(standin: StandIn, job_id: str) -> str:
    variable = standin.variable(variable_path(job_id))
    assert variable is not None, "the secrets variable is written before the job"
    return str(variable["Items"]["BOTFLEET_BOT_TOKEN"])


# ---- through the manager ----------------------------------------------------------------------


def test_job_is_a_batch_job_with_meta_resources_no_restarts_and_no_secrets(
    manager: Manager, standin: StandIn
) -> None:
    user, client = manager.new_user()
    secret = "very-secret-value-123"
    bot = client.post(
        "/bots",
        json={"bot": "demo", "config": {}, "secrets": {"api_key": secret}, "labels": {"team": "a"}},
    ).json()
    job_id = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    assert job_id == f"botfleet-{bot['id']}-1"

    [register] = [
        r for r in standin.requests_to("POST", "/v1/jobs") if r.body["Job"]["ID"] == job_id
    ]
    job = register.body["Job"]
    assert (job["Type"], job["Namespace"], job["Region"]) == ("batch", NAMESPACE, REGION)
    assert job["Datacenters"] == ["dc-test"]
    assert {k: v for k, v in job["Meta"].items() if k != "botfleet_fleet"} == {
        "botfleet_managed": "true",
        "botfleet_bot_id": bot["id"],
        "botfleet_user_id": user["id"],
        "botfleet_attempt": "1",
        "botfleet_label_team": "a",
    }
    [group] = job["TaskGroups"]
    assert group["RestartPolicy"] == {"Attempts": 0, "Mode": "fail"}
    assert group["ReschedulePolicy"] == {"Attempts": 0, "Unlimited": False}
    [task] = group["Tasks"]
    assert task["Driver"] == "raw_exec"
    assert task["Config"] == {"command": sys.executable, "args": ["-m", "botfleet.runtime"]}
    assert task["Resources"] == {"CPU": 500, "MemoryMB": 512}
    assert (task["KillSignal"], task["KillTimeout"]) == ("SIGTERM", 4 * 10**9)
    assert task["Env"]["BOTFLEET_BOT_ID"] == bot["id"]
    assert "BOTFLEET_BOT_TOKEN" not in task["Env"] and "BOTFLEET_BOT_SECRETS" not in task["Env"]
    [template] = task["Templates"]
    assert template["Envvars"] is True and template["DestPath"] == "secrets/botfleet.env"
    assert f'nomadVar "nomad/jobs/{job_id}"' in template["EmbeddedTmpl"]

    # Neither the token nor the secrets appear in the job, its read-back, or the job listing.
    token = _bot_token(standin, job_id)
    listing = standin.requests_to("GET", "/v1/jobs")
    assert listing and all(r.status == 200 for r in listing)
    exposed = [json.dumps(register.body)]
    exposed += [r.answer for r in listing]
    exposed += [r.answer for r in standin.requests_to("GET", f"/v1/job/{job_id}")]
    for text in exposed:
        assert token not in text and secret not in text
    # ...yet the bot got both, through the template: it is active (token), and its environment.
    alloc = standin.alloc_of(job_id)
    assert alloc is not None and alloc.proc is not None
    environ = Path(f"/proc/{alloc.proc.pid}/environ").read_bytes().split(b"\0")
    assert f"BOTFLEET_BOT_SECRETS={json.dumps({'api_key': secret})}".encode() in environ
    assert f"BOTFLEET_BOT_TOKEN={token}".encode() in environ

    # Every request carried the ACL token, the namespace where it applies, and the region.
    assert all(r.headers.get("X-Nomad-Token") == TOKEN for r in standin.requests)
    assert all(r.status != 403 for r in standin.requests)
    client.post(f"/bots/{bot['id']}/stop")
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"


def test_a_lost_allocation_ends_the_bot_only_once_nomad_counts_it_stopped(
    manager: Manager, standin: StandIn
) -> None:
    """Issue 31, 4a: `lost` is the servers' word, not the task's end. The bot ends only once
    Nomad itself counts its task stopped by its client (lost + StopOnClientAfter 1 s +
    max(5 s, KillTimeout 4 s)), never before: `node_lost`, or `heartbeat_lost` when its
    silence (5 s here) was noticed first and it waited `stopping` for that proof."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    job_id = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    standin.lose(job_id)
    lost = standin.alloc_of(job_id)
    assert lost is not None and lost.client_status == "lost"
    lost_at = datetime.fromisoformat(lost.alloc_states[-1]["Time"].replace("Z", "+00:00"))
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert done["status"] == "failed" and done["exit_code"] is None
    assert done["status_reason"] in ("node_lost", "heartbeat_lost"), done["status_reason"]
    last = client.get(f"/bots/{bot['id']}/transitions").json()["items"][-1]
    assert last["source"] == "reconciler" and "allocation lost" in last["detail"], last
    assert datetime.fromisoformat(last["at"]) >= lost_at + timedelta(seconds=6), last


def test_ended_jobs_are_purged_and_their_variable_deleted(
    manager: Manager, standin: StandIn
) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"crash_after_s": 0.5}}).json()
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert (done["status"], done["exit_code"], done["status_reason"]) == ("failed", 1, "crashed")
    job_id = done["runtime_ref"]

    wait_until(
        lambda: standin.job(job_id) is None and standin.variable(variable_path(job_id)) is None,
        timeout=20,
        what="the ended job purged and its variable deleted",
    )
    deletes = standin.requests_to("DELETE", f"/v1/job/{job_id}")
    assert deletes[-1].query.get("purge") == "True", "purged (a stop may come first)"
    # The exit code was recorded before the purge, and the last log lines are kept.
    assert client.get(f"/bots/{bot['id']}").json()["exit_code"] == 1
    logs = client.get(f"/bots/{bot['id']}/logs", params={"tail": 100}).text
    assert "crash_after_s" in logs


def test_logs_come_from_the_allocations_task_logs(manager: Manager, standin: StandIn) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    job_id = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    alloc = standin.alloc_of(job_id)
    assert alloc is not None
    logs = client.get(f"/bots/{bot['id']}/logs", params={"tail": 20}).text
    assert f"starting bot 'demo' as {bot['id']}" in logs
    reads = standin.requests_to("GET", f"/v1/client/fs/logs/{alloc.id}")
    assert {r.query["type"] for r in reads} == {"stdout", "stderr"}
    # Framed, never plain: an error after the first byte is then told from the output.
    assert all(r.query["task"] == "bot" and r.query["plain"] == "False" for r in reads)
    assert all(r.query["origin"] == "end" for r in reads)
    client.post(f"/bots/{bot['id']}/stop")
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"
    assert transitions(client, bot["id"])[-1][:2] == ("stopping", "completed")


def test_secrets_are_bounded_so_the_nomad_variable_always_fits(
    manager: Manager, standin: StandIn
) -> None:
    """Issue 31, 4e. Nomad refuses a variable over 64 KiB of keys and values
    (nomad/structs/variables.go, maxVariableSize): the API bounds the secrets (60 KiB as compact
    JSON), so the largest accepted still launches (token, Redis URL and names included), and
    one byte more is refused before anything is stored."""
    _, client = manager.new_user()
    names = [f"s{i:02d}" for i in range(64)]  # the most names: the most JSON spaces per byte
    largest = {name: "" for name in names}
    room = MAX_SECRETS_BYTES - json_size(largest)
    for i, name in enumerate(names):
        largest[name] = "v" * (room // 64 + (1 if i < room % 64 else 0))
    assert json_size(largest) == MAX_SECRETS_BYTES
    over = client.post(
        "/bots",
        json={"bot": "demo", "config": {}, "secrets": {**largest, "s00": largest["s00"] + "v"}},
    )
    assert over.status_code == 422 and over.json()["detail"]["code"] == "invalid_input", over.text
    assert "secrets" in over.json()["detail"]["message"]
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "secrets": largest}).json()
    job_id = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    items = standin.variable(variable_path(job_id))["Items"]  # type: ignore[index]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in items.items())
    assert 60 * 1024 < size <= 64 * 1024, size
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed", "failed"})


def test_nomad_refuses_a_variable_over_64_kib(standin: StandIn) -> None:
    """The stand-in answers as Nomad does: 400 "variables are limited to 64KiB in total size"
    (nomad/variables_endpoint.go `canonicalizeAndValidate`); the launch fails with it."""
    orchestrator = _orchestrator(standin, SLEEPER)
    spec = LaunchSpec(
        bot_id="huge",
        user_id="user-1",
        attempt=1,
        image=None,
        env={},
        secret_env={"BOTFLEET_BOT_SECRETS": "x" * (64 * 1024)},
    )
    with pytest.raises(LaunchFailed) as refused:
        orchestrator.launch(spec)
    assert refused.value.code == "variable_rejected"
    assert "variables are limited to 64KiB in total size" in str(refused.value)


# ---- the backend alone, against the stand-in --------------------------------------------------

SLEEPER = "import signal, sys, time; print('up', flush=True); time.sleep(60)"
STUBBORN = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.environ['BOTFLEET_BOT_SECRETS'], flush=True); time.sleep(60)"
)


def _orchestrator(standin: StandIn, script: str, **overrides: object) -> NomadOrchestrator:
    settings: dict[str, object] = {
        "address": standin.url,
        "token": TOKEN,
        "namespace": NAMESPACE,
        "region": REGION,
        "driver": "raw_exec",
        "command": [sys.executable, "-c", script],
        "job_prefix": "unit-",
        **overrides,
    }
    return NomadOrchestrator(NomadOrchestratorConfig(**settings))  # type: ignore[arg-type]


def _spec(bot_id: str, **env: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id,
        user_id="user-1",
        attempt=1,
        image=None,
        env={"BOTFLEET_BOT_ID": bot_id, "BOTFLEET_BOT_TOKEN": "tok-" + bot_id, **env},
    )


def test_register_is_asynchronous_and_the_kill_after_the_grace_is_a_signal(
    standin: StandIn,
) -> None:
    """What only Nomad does; running, the kill's exit code and timing, stop of an ended job and
    remove run on every backend in tests/integration/backends/test_backend_contract.py."""
    orchestrator = _orchestrator(standin, STUBBORN)
    ref = orchestrator.launch(_spec("stubborn", BOTFLEET_BOT_SECRETS='{"k": "v w"}'))
    assert ref == "unit-stubborn-1"
    assert orchestrator.inspect(ref).state == WorkloadState.PENDING, "no allocation yet"
    wait_until(lambda: orchestrator.inspect(ref).state == WorkloadState.RUNNING, timeout=10)
    # The secret's value, space included, survives the template's quoting.
    wait_until(lambda: "v w" in orchestrator.logs(ref, bot_id="stubborn", tail=5), timeout=10)

    status = orchestrator.stop(ref, grace_s=0.5)  # ignores SIGTERM; KillTimeout is 30 s
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 137)
    [deregister] = standin.requests_to("DELETE", f"/v1/job/{ref}")
    assert deregister.query.get("purge") is None
    alloc = standin.alloc_of(ref)
    assert alloc is not None
    [kill] = standin.requests_to("POST", f"/v1/client/allocation/{alloc.id}/signal")
    assert kill.body == {"Signal": "SIGKILL", "Task": "bot"}

    orchestrator.remove(ref)
    assert standin.variable(variable_path(ref)) is None


def test_sigterm_on_deregister_and_exit_codes(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin, SLEEPER)
    ref = orchestrator.launch(_spec("sleeper"))
    wait_until(lambda: orchestrator.inspect(ref).state == WorkloadState.RUNNING, timeout=10)
    status = orchestrator.stop(ref, grace_s=5)
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 143), status  # SIGTERM
    alloc = standin.alloc_of(ref)
    assert alloc is not None
    assert standin.requests_to("POST", f"/v1/client/allocation/{alloc.id}") == []
    orchestrator.remove(ref)


def test_rejected_job_is_a_launch_failure_and_leaves_no_variable(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin, SLEEPER, memory_mb=4)  # Nomad's minimum is 10
    with pytest.raises(LaunchFailed) as failure:
        orchestrator.launch(_spec("too-small"))
    assert failure.value.code == "job_rejected" and "MemoryMB" in str(failure.value)
    assert standin.variable("nomad/jobs/unit-too-small-1") is None


def test_docker_driver_job_runs_the_image(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin, SLEEPER, driver="docker")
    spec = _spec("dockerish")
    job = orchestrator.job_spec(spec, secret_names=["BOTFLEET_BOT_TOKEN"])
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Config"]["image"] == orchestrator.config.default_image
    assert not task["Config"]["image"].endswith(":latest"), "Nomad would pull it every time"
    assert "network_mode" not in task["Config"], "host networking is opt-in"
    assert task["Config"]["cap_drop"] == ["ALL"]
    assert task["User"] == "10001:10001"
    assert "tok-dockerish" not in json.dumps(job)


def test_server_errors_and_refused_tokens_are_backend_unavailable(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin, SLEEPER)
    orchestrator.check_health()
    standin.fail_with = 500
    try:
        with pytest.raises(BackendUnavailable):
            orchestrator.inspect("unit-x-1")
        with pytest.raises(BackendUnavailable):
            orchestrator.list_workloads()
    finally:
        standin.fail_with = None
    wrong = _orchestrator(standin, SLEEPER, token="not-the-token")
    with pytest.raises(BackendUnavailable, match="ACL token"):
        wrong.inspect("unit-x-1")
    assert orchestrator.inspect("unit-never-1").state == WorkloadState.NOT_FOUND


def test_jobs_are_placed_by_the_bots_own_or_its_kinds_placement(
    manager: Manager, standin: StandIn
) -> None:
    """A kind's placement and resources reach its bots' jobs; a bot's own placement replaces
    the kind's and its own memory overrides the kind's; datacenters no node is in fail the
    launch with Nomad's reason; an expression Nomad would refuse is 422 before anything is
    stored. (The stand-in checks no constraint: what Nomad does with them is Nomad's.)"""
    placement = {"constraints": ["${attr.kernel.name} = linux"], "datacenters": ["dc-*"]}
    kind = {"name": "placed-demo", "run": {"python": "botfleet.runtime.bots.demo:DemoBot"},
            "resources": {"cpu": 0.25, "memory_mb": 256}, "placement": placement}  # fmt: skip
    with manager.admin() as admin:
        made = admin.post("/admin/kinds", json=kind)
        assert made.status_code == 201 and made.json()["placement"] == placement, made.text
    _, client = manager.new_user()
    wrong = {"bot": "placed-demo", "config": {}, "placement": {"constraints": ["zone == a"]}}
    refused = client.post("/bots", json=wrong)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["code"] == "placement_unsupported"
    assert client.get("/bots").json()["items"] == []
    inherits = client.post("/bots", json={"bot": "placed-demo", "config": {}}).json()
    own = {"node_labels": {"zone": "a"}, "datacenters": ["dc-elsewhere"]}
    overrides = client.post(
        "/bots",
        json={"bot": "placed-demo", "config": {}, "resources": {"memory_mb": 300},
              "placement": own},
    ).json()  # fmt: skip

    def job(bot_id: str) -> dict | None:
        jobs = [r.body["Job"] for r in standin.requests_to("POST", "/v1/jobs")]
        return next((j for j in jobs if j["Meta"]["botfleet_bot_id"] == bot_id), None)

    kinds = wait_until(lambda: job(inherits["id"]), what="the kind's bot's job")
    assert (kinds["Datacenters"], kinds["Constraints"]) == (
        ["dc-*"],
        [{"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"}],
    )
    assert kinds["TaskGroups"][0]["Tasks"][0]["Resources"] == {"CPU": 250, "MemoryMB": 256}
    bots = wait_until(lambda: job(overrides["id"]), what="the overriding bot's job")
    assert (bots["Datacenters"], bots["Constraints"]) == (
        ["dc-elsewhere"],
        [{"LTarget": "${meta.zone}", "Operand": "=", "RTarget": "a"}],
    )
    assert bots["TaskGroups"][0]["Tasks"][0]["Resources"] == {"CPU": 250, "MemoryMB": 300}
    failed = wait_for_status(client, overrides["id"], {"failed", "active", "completed"})
    assert (failed["status"], failed["status_reason"]) == ("failed", "no_capacity"), failed
    last = client.get(f"/bots/{overrides['id']}/transitions").json()["items"][-1]
    assert "dc-elsewhere" in last["detail"], last
    assert client.post(f"/bots/{inherits['id']}/stop").status_code == 202
    wait_for_status(client, inherits["id"], {"completed", "failed"})
