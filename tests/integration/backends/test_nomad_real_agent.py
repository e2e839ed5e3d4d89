"""The backend contract (test_backend_contract.py, beside this file) against a REAL Nomad agent.

Skipped unless BOTFLEET_TEST_NOMAD_ADDR names one. The agent must run on this machine with the
raw_exec driver (its tasks are read through /proc), e.g. a dev agent:

    nomad agent -dev -config <(echo 'plugin "raw_exec" { config { enabled = true } }')
    BOTFLEET_TEST_NOMAD_ADDR=http://127.0.0.1:4646 \\
        .venv/bin/pytest -p no:cacheprovider tests/integration/backends/test_nomad_real_agent.py

BOTFLEET_TEST_NOMAD_TOKEN passes an ACL token (the capabilities the README lists). This is what
only a real cluster proves: Nomad's scheduler, client and template runner doing with our job
JSON what the stand-in (tests/nomad_standin/) says they do.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig
from tests.integration.backends import test_backend_contract as contract
from tests.support import RedisServer

ADDRESS = os.environ.get("BOTFLEET_TEST_NOMAD_ADDR", "")
TOKEN = os.environ.get("BOTFLEET_TEST_NOMAD_TOKEN") or None

pytestmark = pytest.mark.skipif(
    not ADDRESS, reason="BOTFLEET_TEST_NOMAD_ADDR is not set (no real Nomad agent to test against)"
)

# The contract's cases, collected here again: they run on this module's `harness`.
globals().update({k: v for k, v in vars(contract).items() if k.startswith("test_")})


def _task_pid(job_id: str) -> int:
    """The pid of the raw_exec task of `job_id` on this machine (its NOMAD_JOB_ID)."""
    wanted = f"NOMAD_JOB_ID={job_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ and b"BOTFLEET_BOT_ID" in b"".join(environ):
            return int(proc.name)
    raise AssertionError(f"no task process of job {job_id} on this machine")


def _real_nomad(redis_url: str) -> contract.Harness:
    prefix = f"contract-{uuid.uuid4().hex[:6]}-"

    def backend_at(address: str, **overrides: object) -> NomadOrchestrator:
        settings: dict[str, object] = {
            "address": address,
            "token": TOKEN,
            "driver": "raw_exec",
            "command": [sys.executable, "-m", "botfleet.runtime"],
            "stop_grace_s": 30,
            "job_prefix": prefix,
            **overrides,
        }
        return NomadOrchestrator(NomadOrchestratorConfig(**settings))  # type: ignore[arg-type]

    backend = backend_at(ADDRESS)

    def exposed(ref: str) -> list[str]:
        job = backend.client.job.get_job(ref)
        allocs = backend.client.job.get_allocations(ref)
        return [json.dumps(job), json.dumps(allocs), contract._proc_cmdline(_task_pid(ref))]

    return contract.Harness(
        name="nomad-real",
        backend=backend,
        redis_url=redis_url,
        environ=lambda ref: contract._proc_environ(_task_pid(ref)),
        exposed=exposed,
        unreachable=contract.unreachable_nomad(backend_at),
        unknown_refs=(f"{prefix}never-1",),
        sigkill_detail="Signal: 9",
        sees_only_its_own=False,  # other jobs may share a real cluster
        names_secret_variables=True,
    )


@pytest.fixture
def harness(redis_server: RedisServer) -> Iterator[contract.Harness]:
    made = _real_nomad(redis_server.url)
    yield made
    made.close()
