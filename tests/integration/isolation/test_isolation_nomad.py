"""Nomad: one explicit namespace for a bot's job and its secrets variable, no NOMAD_* variable
changing what botfleet does behind its settings' back, and no host networking by default
(issue 14, item 5). Against the Nomad stand-in, which, like Nomad, acts in the namespace each
request names (`?namespace=`, `default` without one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import httpx
import pytest

from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig, variable_path
from botfleet.orchestrators.nomad.backend import ConflictingNomadEnvironment
from tests.nomad_standin import StandIn
from tests.support import Manager, RedisServer, running_manager, wait_for_status

NAMESPACED = ("/v1/jobs", "/v1/job/", "/v1/var/")


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    # No expected namespace: the stand-in files each request where its query says.
    server = StandIn(tmp_path_factory.mktemp("nomad-ns"), datacenter="dc-test").start()
    yield server
    server.stop()


def _manager_env(standin: StandIn, **extra: str) -> dict[str, str]:
    return {
        "BOTFLEET_NOMAD_ADDRESS": standin.url,
        "BOTFLEET_NOMAD_DATACENTERS": '["dc-test"]',
        "BOTFLEET_NOMAD_DRIVER": "raw_exec",
        "BOTFLEET_NOMAD_COMMAND": json.dumps([sys.executable, "-m", "botfleet.runtime"]),
        # What an operator's shell often holds: python-nomad would read it silently.
        "NOMAD_NAMESPACE": "other",
        **extra,
    }


def _where(standin: StandIn, job_id: str) -> tuple[set[str], set[str]]:
    """The namespaces holding the job, and those holding its secrets variable."""
    with standin.cluster.lock:
        jobs = {ns for ns, jid in standin.jobs if jid == job_id}
        variables = {ns for ns, path in standin.variables if path == variable_path(job_id)}
    return jobs, variables


def _run_a_bot(manager: Manager) -> tuple[httpx.Client, str, str]:
    """Start a demo bot; its user's client, its id and its job id once it is active."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    job_id = wait_for_status(client, bot["id"], {"active"}, timeout=60)["runtime_ref"]
    return client, bot["id"], str(job_id)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [({"BOTFLEET_NOMAD_NAMESPACE": "bots"}, "bots"), ({}, "default")],
    ids=["namespace-setting", "no-setting"],
)
def test_the_job_and_its_secrets_variable_land_in_one_namespace_whatever_nomad_namespace_says(
    standin: StandIn,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    setting: dict[str, str],
    expected: str,
) -> None:
    root = tmp_path_factory.mktemp("nomad-ns-manager")
    env = _manager_env(standin, **setting)
    with running_manager(root, redis_server.url, backend="nomad", extra_env=env) as manager:
        client, bot_id, job_id = _run_a_bot(manager)  # active: the template found its variable
        jobs, variables = _where(standin, job_id)
        assert (jobs, variables) == ({expected}, {expected})
        job = standin.job(job_id, expected)
        assert job is not None and job.read()["Namespace"] == expected
        sent = [
            r
            for r in standin.requests
            if r.path.startswith(NAMESPACED) and job_id in json.dumps([r.path, r.body])
        ]
        assert sent and {r.query.get("namespace") for r in sent} == {expected}
        assert "NOMAD_NAMESPACE=other is ignored" in manager.log_path.read_text()
        client.post(f"/bots/{bot_id}/stop")
        assert wait_for_status(client, bot_id, {"completed", "failed"})["status"] == "completed"


def test_a_nomad_token_or_region_without_its_setting_refuses_to_start(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = NomadOrchestratorConfig(address=standin.url)
    monkeypatch.setenv("NOMAD_TOKEN", "someone-elses-token")
    with pytest.raises(ConflictingNomadEnvironment, match=r"NOMAD_TOKEN .* BOTFLEET_NOMAD_TOKEN"):
        NomadOrchestrator(config)
    monkeypatch.delenv("NOMAD_TOKEN")
    monkeypatch.setenv("NOMAD_REGION", "elsewhere")
    with pytest.raises(ConflictingNomadEnvironment, match="BOTFLEET_NOMAD_REGION"):
        NomadOrchestrator(config)


def test_botfleet_settings_win_over_every_nomad_variable(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in {
        "NOMAD_ADDR": "http://127.0.0.1:9",  # nothing listens there
        "NOMAD_NAMESPACE": "other",
        "NOMAD_TOKEN": "someone-elses-token",
        "NOMAD_REGION": "elsewhere",
    }.items():
        monkeypatch.setenv(variable, value)
    orchestrator = NomadOrchestrator(
        NomadOrchestratorConfig(address=standin.url, token="ours", region="global")
    )
    before = len(standin.requests)
    orchestrator.list_workloads()  # reached the stand-in, not NOMAD_ADDR
    sent = standin.requests[before:]
    assert sent and all(r.headers.get("X-Nomad-Token") == "ours" for r in sent)
    assert {(r.query.get("namespace"), r.query.get("region")) for r in sent} == {
        ("default", "global")
    }
