"""Per-bot resources and placement, pure: the request's bounds, the admin's maxima, what a
launch gets from a bot and its kind, which backend honours a placement, and the Nomad job's
constraints and datacenters. Through a manager: tests/integration/api/test_kinds.py (process),
test_docker_backend.py (the container's limits), test_nomad_backend.py (the job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.schemas.bots import BotCreate
from botfleet.manager.schemas.kinds import KindCreate
from botfleet.manager.services.bot_resources import (
    StartLimits,
    chosen_placement,
    merged_resources,
)
from botfleet.orchestrators.base import LaunchSpec, Placement, PlacementUnsupported, Resources
from botfleet.orchestrators.docker import DockerOrchestrator
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import build_job, parse_constraint
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

NOMAD = NomadOrchestratorConfig(address="http://127.0.0.1:1", datacenters=["dc1"])


def bot(**fields: Any) -> BotCreate:
    return BotCreate.model_validate({"bot": "demo", "config": {}, **fields})


def refused(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        bot(**fields)
    return str(caught.value)


# ---- the request ------------------------------------------------------------------------------


def test_a_bot_names_its_resources_and_placement() -> None:
    body = bot(
        resources={"cpu": 0.5, "memory_mb": 256},
        placement={"constraints": ["node.labels.zone==a"], "node_labels": {"disk": "ssd"}},
    )
    assert body.resources is not None and body.resources.document() == {
        "cpu": 0.5,
        "memory_mb": 256,
    }
    assert body.placement is not None and body.placement.document() == {
        "constraints": ["node.labels.zone==a"],
        "node_labels": {"disk": "ssd"},
    }
    anywhere = bot(placement={}).placement
    assert anywhere is not None and anywhere.document() == {}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"resources": {"cpu": 1e-12}}, "greater than or equal to 0.01"),
        ({"resources": {"memory_mb": 8}}, "greater than or equal to 16"),
        ({"resources": {"memory_mb": "256"}}, "valid integer"),
        ({"resources": {"gpu": 1}}, "Extra inputs"),
        ({"placement": {"constraints": ["x"] * 17}}, "at most 16"),
        ({"placement": {"constraints": ["a\nb"]}}, "pattern"),
        ({"placement": {"constraints": ["x" * 501]}}, "at most 500"),
        ({"placement": {"node_labels": {"bad key": "v"}}}, "node label key"),
        ({"placement": {"node_labels": {"zone": "a==b"}}}, "its value must match"),
        ({"placement": {"node_labels": {f"k{i}": "v" for i in range(17)}}}, "at most 16"),
        ({"placement": {"datacenters": ["dc 1"]}}, "pattern"),
        ({"placement": {"zone": "a"}}, "Extra inputs"),
    ],
)
def test_bounds_are_clear(fields: dict[str, Any], says: str) -> None:
    assert says in refused(**fields)


def test_a_kind_takes_a_placement_and_stores_what_it_names() -> None:
    base = {"name": "k", "run": {"python": "m:C"}}
    placed = KindCreate.model_validate({**base, "placement": {"datacenters": ["dc-*"]}})
    assert placed.document()["placement"] == {"datacenters": ["dc-*"]}
    empty = KindCreate.model_validate({**base, "placement": {"constraints": []}})
    assert empty.document()["placement"] is None


# ---- what a launch gets -----------------------------------------------------------------------


def test_a_bots_resources_override_its_kinds_field_by_field() -> None:
    kind = {"cpu": 2.0, "memory_mb": 1024}
    assert merged_resources({"memory_mb": 300}, kind) == Resources(2.0, 300)
    assert merged_resources(None, kind) == Resources(2.0, 1024)
    assert merged_resources({"cpu": 0.5}, None) == Resources(0.5, None)
    assert merged_resources(None, None) is None


def test_a_bots_placement_replaces_its_kinds() -> None:
    kind = {"constraints": ["${meta.zone} = a"], "datacenters": ["dc1"]}
    assert chosen_placement(None, kind) == Placement(("${meta.zone} = a",), {}, ("dc1",))
    assert chosen_placement({"node_labels": {"disk": "ssd"}}, kind) == Placement(
        (), {"disk": "ssd"}
    )
    assert chosen_placement({}, kind) is None  # its own `{}`: anywhere
    assert chosen_placement(None, None) is None


# ---- the checks before anything is stored -----------------------------------------------------


def test_resources_over_a_maximum_are_refused_naming_it() -> None:
    limits = StartLimits(max_cpu=2, max_memory_mb=1024, orchestrator=DockerOrchestrator())
    limits.check_resources({"cpu": 2, "memory_mb": 1024})
    limits.check_resources(None)
    for asked, maximum in (({"cpu": 2.5}, "2 CPUs"), ({"memory_mb": 1025}, "1024 MiB")):
        with pytest.raises(Invalid) as caught:
            limits.check_resources(asked)
        assert caught.value.code == ErrorCode.RESOURCES_OVER_LIMIT
        assert maximum in caught.value.message and "BOTFLEET_MAX_BOT_" in caught.value.message
    with pytest.raises(Invalid) as caught:
        limits.check_kind({"resources": {"cpu": 3}})
    assert caught.value.code == ErrorCode.RESOURCES_OVER_LIMIT


def test_process_and_docker_place_nothing(tmp_path: Path) -> None:
    backends = [
        ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path)),
        DockerOrchestrator(),
    ]
    for backend in backends:
        limits = StartLimits(max_cpu=4, max_memory_mb=4096, orchestrator=backend)
        limits.check_placement(None)  # none, or `{}`, is anywhere: every backend takes it
        with pytest.raises(Invalid) as caught:
            limits.check_placement(Placement(node_labels={"zone": "a"}))
        assert caught.value.code == ErrorCode.PLACEMENT_UNSUPPORTED
        assert "cannot place bots" in caught.value.message
        with pytest.raises(Invalid):
            limits.check_kind({"placement": {"datacenters": ["dc1"]}})


# ---- nomad ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "constraint"),
    [
        ("${attr.kernel.name} = linux", ("${attr.kernel.name}", "=", "linux")),
        ("${meta.zone}   !=  b", ("${meta.zone}", "!=", "b")),
        ("${attr.nomad.version} version >= 1.6, < 2.0", ("${attr.nomad.version}", "version",
                                                         ">= 1.6, < 2.0")),
        ("${node.class} regexp ^gpu-.*$", ("${node.class}", "regexp", "^gpu-.*$")),
        ("${meta.ssd} is_set", ("${meta.ssd}", "is_set", "")),
    ],
)  # fmt: skip
def test_nomad_reads_its_own_constraint_syntax(text: str, constraint: tuple[str, ...]) -> None:
    keys = ("LTarget", "Operand", "RTarget")
    assert parse_constraint(text) == dict(zip(keys, constraint, strict=True))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("node.labels.zone==a", "write `<LTarget> <Operand> <RTarget>`"),
        ("${meta.zone} ~ a", "operators:"),
        ("${meta.zone} =", "needs a right side"),
        ("${meta.zone} is_not_set x", "takes no right side"),
        ("zone = a", "the left side is a node's value"),
        ("${node.colour} = red", "the left side is a node's value"),
        ("${meta.zone} regexp (", "not a regular expression"),
        ("${node.unique.id} distinct_hosts", "would place nothing apart"),
    ],
)
def test_nomad_refuses_what_it_would_refuse_or_ignore(text: str, says: str) -> None:
    backend = NomadOrchestrator(NOMAD)
    with pytest.raises(PlacementUnsupported) as caught:
        backend.check_placement(Placement(constraints=(text,)))
    assert says in str(caught.value)


def test_nomad_jobs_carry_the_constraints_and_datacenters() -> None:
    def job(placement: Placement | None) -> dict[str, Any]:
        spec = LaunchSpec(
            bot_id="b", user_id="u", attempt=1, image=None, env={}, placement=placement
        )
        return build_job(NOMAD, spec, job_id="botfleet-b-1", secret_names=[])

    plain = job(None)
    assert plain["Datacenters"] == ["dc1"] and "Constraints" not in plain
    placed = job(
        Placement(
            constraints=("${attr.kernel.name} = linux",),
            node_labels={"zone": "a"},
            datacenters=("eu-*", "dc2"),
        )
    )
    assert placed["Datacenters"] == ["eu-*", "dc2"]
    assert placed["Constraints"] == [
        {"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"},
        {"LTarget": "${meta.zone}", "Operand": "=", "RTarget": "a"},
    ]
    NomadOrchestrator(NOMAD).check_placement(Placement(datacenters=("dc2",)))
