"""The backend contract, once, on every engine: process, docker (the real engine) and nomad (the
stand-in of tests/nomad_standin/).

Every case runs the real bot runtime with the built-in `demo` bot, `silent` (it never calls a
manager back, so none is needed), and asserts in the one health vocabulary of
`botfleet.orchestrators.base` (`WorkloadState`, `WorkloadStatus`). Each engine is built by one small
factory below (`_process`, `_docker`, `_nomad`), which also says how to read back what the engine
holds (the workload's environment; what it shows outside that environment). What only one engine
does stays in that engine's own test file (docker hardening, Nomad job JSON, process records that
survive a manager restart, ...).

No manager runs here. The docker and nomad workloads carry a fleet label of their own, so a
manager's reconciler running meanwhile (another test module) never takes them for its orphans.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_FLEET,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    WorkloadNotFound,
    WorkloadState,
)
from botfleet.orchestrators.docker import DockerOrchestrator, DockerOrchestratorConfig
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.protocol import command_channel
from tests.nomad_standin import StandIn
from tests.support import RedisServer, wait_until

SECRET = "s3cr3t-value-never-in-labels"
NOMAD_TOKEN = "nomad-acl-token-for-contract"
#: The demo bot's config switches (runtime/bots/demo.py); `silent`: no manager callbacks.
IDLE = {"silent": True}
IGNORES_SIGTERM = {"silent": True, "ignore_leave": True}
FINISHES_WITH_3 = {"silent": True, "finish_after_s": 0.3, "exit_code": 3}
#: Every operation of the contract, by name (for the unreachable-engine case).
OPERATIONS = ("launch", "inspect", "stop", "list_workloads", "logs", "remove", "check_health")


@dataclass
class Harness:
    """One backend under test, and what a case needs to know about its engine."""

    name: str
    backend: Orchestrator
    redis_url: str
    #: The environment the engine hands the workload (where the secrets must arrive).
    environ: Callable[[str], dict[str, str]]
    #: Everything the engine shows about the workload outside its environment (labels, Meta,
    #: records, job JSON, command line): the secrets must appear in none of it.
    exposed: Callable[[str], list[str]]
    #: The same backend pointed at an engine that cannot be reached.
    unreachable: Callable[[], Orchestrator]
    #: Refs the engine never had.
    unknown_refs: tuple[str, ...]
    #: What the exit detail says after the kill (empty: the engine says nothing).
    sigkill_detail: str
    #: False when other workloads share the engine (an unfiltered listing is not only ours).
    sees_only_its_own: bool = True
    #: True when the logs are kept by bot, not by workload, and so outlive `remove`.
    logs_outlive_remove: bool = False
    #: Operations that never ask the engine, so they cannot fail on an unreachable one.
    answers_offline: frozenset[str] = frozenset()
    #: True when the engine's job names the secret variables (Nomad's template), never their
    #: values; elsewhere not even the names show.
    names_secret_variables: bool = False
    #: Clients of the engine opened by the factory itself, closed after the test.
    on_close: list[Callable[[], None]] = field(default_factory=list)
    fleet: str = field(default_factory=lambda: f"contract-{uuid.uuid4().hex[:8]}")
    launched: list[str] = field(default_factory=list)

    def spec(self, config: dict[str, object], **labels: str) -> LaunchSpec:
        """A LaunchSpec that runs the demo bot, its environment rendered by its one home."""
        bot_id = f"c{uuid.uuid4().hex[:10]}"
        rendered = RuntimeEnv(
            bot_id=bot_id,
            token=f"token-{SECRET}",
            callback_url="http://127.0.0.1:9",  # never called: the bot is silent
            redis_url=self.redis_url,
            command_channel=command_channel(bot_id),
            bot="demo",
            config=dict(config),
            secrets={"api_key": SECRET},
        ).render()
        return LaunchSpec(
            bot_id=bot_id,
            user_id="user-1",
            attempt=1,
            image=None,
            env=rendered.env,
            secret_env=rendered.secret_env,
            labels=labels,
            fleet=self.fleet,
        )

    def launch(self, spec: LaunchSpec) -> str:
        ref = self.backend.launch(spec)
        self.launched.append(ref)
        return ref

    def started(self, ref: str, bot_id: str) -> None:
        """Wait until the runtime runs the bot (and so handles SIGTERM)."""
        wait_until(
            lambda: f"demo bot {bot_id} started" in self.backend.logs(ref, bot_id=bot_id, tail=50),
            timeout=30,
            what=f"the demo bot running on {self.name}",
        )

    def close(self) -> None:
        for ref in self.launched:
            with suppress(OrchestratorError):
                self.backend.stop(ref, grace_s=0)
                self.backend.remove(ref)
        self.backend.close()
        for close in self.on_close:
            close()


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def _proc_cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# ---- one factory per backend ------------------------------------------------------------------


#: The process backend hands secrets through a pipe, not the environment: this runs the real
#: runtime after keeping a copy of what it received in its private working directory.
SPY_RUNTIME = """
import json, os, runpy
from botfleet.runtime.env import SECRET_ENV_FD, with_secret_env
received = with_secret_env(os.environ)
with open("received-env.json", "w") as out:
    json.dump(received, out)
read_fd, write_fd = os.pipe()
public = set(os.environ) - {SECRET_ENV_FD}
os.write(write_fd, json.dumps({k: v for k, v in received.items() if k not in public}).encode())
os.close(write_fd)
os.environ[SECRET_ENV_FD] = str(read_fd)
runpy.run_module("botfleet.runtime", run_name="__main__")
"""


def _process(tmp_path: Path, redis_url: str) -> Harness:
    config = ProcessOrchestratorConfig(
        data_dir=tmp_path / "data", command=[sys.executable, "-c", SPY_RUNTIME], kill_wait_s=5
    )
    backend = ProcessOrchestrator(config)

    def pid(ref: str) -> int:
        return int(ref.split("-")[0])

    def received(ref: str) -> dict[str, str]:
        """What the runtime got: its environment plus the secret pipe (root reads its cwd)."""
        copy = Path(f"/proc/{pid(ref)}/cwd/received-env.json")
        wait_until(copy.exists, timeout=10, what="the runtime's copy of its environment")
        return json.loads(copy.read_text())

    def exposed(ref: str) -> list[str]:
        return [
            (config.data_dir / "workloads" / f"{ref}.json").read_text(),
            _proc_cmdline(pid(ref)),
            json.dumps(_proc_environ(pid(ref))),  # other processes read /proc/PID/environ
        ]

    def unreachable() -> Orchestrator:
        (tmp_path / "file").write_text("not a directory")
        return ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path / "file"))

    return Harness(
        name="process",
        backend=backend,
        redis_url=redis_url,
        environ=received,
        exposed=exposed,
        unreachable=unreachable,
        unknown_refs=("12345-67890", "../../etc/passwd", ""),
        sigkill_detail="SIGKILL",
        logs_outlive_remove=True,
        # A data dir that cannot hold records lists as empty: there is no engine to ask.
        answers_offline=frozenset({"list_workloads"}),
    )


def _docker(redis_url: str) -> Harness:
    backend = DockerOrchestrator(DockerOrchestratorConfig(network="host"))
    engine = docker.from_env()

    def environ(ref: str) -> dict[str, str]:
        env = engine.containers.get(ref).attrs["Config"]["Env"]
        return dict(item.partition("=")[::2] for item in env)

    def exposed(ref: str) -> list[str]:
        attrs = engine.containers.get(ref).attrs
        shown = [attrs["Config"].get(k) for k in ("Labels", "Cmd", "Entrypoint")]
        shown.append(attrs.get("Args"))
        texts = [json.dumps(shown)]
        if attrs["State"].get("Pid"):
            texts.append(_proc_cmdline(attrs["State"]["Pid"]))
        return texts

    return Harness(
        name="docker",
        backend=backend,
        redis_url=redis_url,
        environ=environ,
        exposed=exposed,
        unreachable=lambda: DockerOrchestrator(
            DockerOrchestratorConfig(base_url="unix:///nonexistent/docker.sock")
        ),
        unknown_refs=("0123456789ab",),
        sigkill_detail="",
        sees_only_its_own=False,
        on_close=[engine.close],
    )


def unreachable_nomad(backend_at: Callable[..., Orchestrator]) -> Callable[[], Orchestrator]:
    """Nomad backends whose address refuses connections: each port is held (bound, never
    listening) for as long as the harness lives, so it is no one else's meanwhile."""
    held: list[socket.socket] = []

    def unreachable() -> Orchestrator:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
        return backend_at(f"http://127.0.0.1:{sock.getsockname()[1]}", api_timeout_s=2)

    return unreachable


def _nomad(standin: StandIn, redis_url: str) -> Harness:
    prefix = f"contract-{uuid.uuid4().hex[:6]}-"

    def backend_at(address: str, **overrides: object) -> NomadOrchestrator:
        settings: dict[str, object] = {
            "address": address,
            "token": NOMAD_TOKEN,
            "driver": "raw_exec",
            "command": [sys.executable, "-m", "botfleet.runtime"],
            # Nomad's KillTimeout, far beyond the cases' grace: a kill after it is ours.
            "stop_grace_s": 30,
            "job_prefix": prefix,
            **overrides,
        }
        return NomadOrchestrator(NomadOrchestratorConfig(**settings))  # type: ignore[arg-type]

    def pid(ref: str) -> int:
        alloc = standin.alloc_of(ref)
        assert alloc is not None and alloc.proc is not None, f"{ref} has no running task"
        return alloc.proc.pid

    def exposed(ref: str) -> list[str]:
        texts = [json.dumps(r.body) for r in standin.requests_to("POST", "/v1/jobs")]
        texts += [r.answer for r in standin.requests_to("GET", "/v1/job")]
        texts += [_proc_cmdline(pid(ref))]
        return texts

    return Harness(
        name="nomad",
        backend=backend_at(standin.url),
        redis_url=redis_url,
        environ=lambda ref: _proc_environ(pid(ref)),
        exposed=exposed,
        unreachable=unreachable_nomad(backend_at),
        unknown_refs=(f"{prefix}never-1",),
        sigkill_detail="Signal: 9",
        names_secret_variables=True,
    )


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = StandIn(tmp_path_factory.mktemp("nomad"), token=NOMAD_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(params=["process", "docker", "nomad"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[Harness]:
    if request.param == "process":
        made = _process(tmp_path, redis_server.url)
    elif request.param == "docker":
        request.getfixturevalue("docker_engine")
        made = _docker(redis_server.url)
    else:
        made = _nomad(request.getfixturevalue("standin"), redis_server.url)
    yield made
    made.close()


# ---- the contract -----------------------------------------------------------------------------


def test_launch_runs_the_bot_with_its_environment(harness: Harness) -> None:
    backend = harness.backend
    backend.check_health()
    spec = harness.spec(IDLE, team="a")
    ref = harness.launch(spec)
    assert backend.inspect(ref).state in (WorkloadState.PENDING, WorkloadState.RUNNING)
    wait_until(lambda: backend.inspect(ref).state is WorkloadState.RUNNING, timeout=30)
    harness.started(ref, spec.bot_id)

    environ = harness.environ(ref)
    assert environ["BOTFLEET_BOT_ID"] == spec.bot_id
    assert environ["BOTFLEET_BOT_TOKEN"] == f"token-{SECRET}"
    assert json.loads(environ["BOTFLEET_BOT_SECRETS"]) == {"api_key": SECRET}
    [listed] = backend.list_workloads({LABEL_BOT_ID: spec.bot_id})
    assert (listed.runtime_ref, listed.bot_id) == (ref, spec.bot_id)
    assert listed.status.state is WorkloadState.RUNNING
    assert listed.labels[LABEL_FLEET] == harness.fleet
    assert listed.labels["botfleet.label.team"] == "a"


def test_secrets_reach_only_the_environment(harness: Harness) -> None:
    spec = harness.spec(IDLE, team="a")
    ref = harness.launch(spec)
    harness.started(ref, spec.bot_id)  # running, so the engine shows its environment
    [listed] = harness.backend.list_workloads({LABEL_BOT_ID: spec.bot_id})
    texts = [json.dumps(dict(listed.labels)), *harness.exposed(ref)]
    for text in texts:
        assert SECRET not in text, text  # the token holds it too
        if not harness.names_secret_variables:
            assert "BOTFLEET_BOT_SECRETS" not in text and "BOTFLEET_BOT_TOKEN" not in text, text
    assert SECRET in harness.environ(ref)["BOTFLEET_BOT_SECRETS"]


def test_logs_hold_both_streams_and_tail(harness: Harness) -> None:
    spec = harness.spec(IDLE)
    ref = harness.launch(spec)
    harness.started(ref, spec.bot_id)
    text = harness.backend.logs(ref, bot_id=spec.bot_id, tail=100)
    assert f"starting bot 'demo' as {spec.bot_id}" in text  # the runtime's log, on stderr
    assert f"demo bot {spec.bot_id} started with config {json.dumps(IDLE)}" in text  # stdout
    last = harness.backend.logs(ref, bot_id=spec.bot_id, tail=1)
    assert len(last.strip().splitlines()) == 1 and last.strip() in text


def test_stop_with_grace_ends_with_the_bots_exit_code(harness: Harness) -> None:
    spec = harness.spec(IDLE)
    ref = harness.launch(spec)
    harness.started(ref, spec.bot_id)
    status = harness.backend.stop(ref, grace_s=10)  # SIGTERM: the runtime leaves, exit 0
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 0), status
    assert harness.backend.inspect(ref) == status
    assert harness.backend.stop(ref, grace_s=1) == status, "stopping an ended one is no error"
    text = harness.backend.logs(ref, bot_id=spec.bot_id, tail=100)
    assert "demo bot leaving" in text


def test_stop_kills_a_bot_that_ignores_sigterm_after_the_grace(harness: Harness) -> None:
    spec = harness.spec(IGNORES_SIGTERM)
    ref = harness.launch(spec)
    harness.started(ref, spec.bot_id)
    began = time.monotonic()
    status = harness.backend.stop(ref, grace_s=1)
    assert 1 <= time.monotonic() - began < 10
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 137), status
    assert harness.sigkill_detail in status.detail
    assert harness.backend.inspect(ref).exit_code == 137


def test_a_bot_that_ends_on_its_own_reports_its_exit_code(harness: Harness) -> None:
    spec = harness.spec(FINISHES_WITH_3)
    ref = harness.launch(spec)
    wait_until(lambda: harness.backend.inspect(ref).is_gone, timeout=30, what="the bot's exit")
    status = harness.backend.inspect(ref)
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 3), status
    [listed] = harness.backend.list_workloads({LABEL_BOT_ID: spec.bot_id})
    assert (listed.runtime_ref, listed.status.state) == (ref, WorkloadState.EXITED)
    assert listed.status.exit_code == 3
    assert harness.backend.stop(ref, grace_s=1).exit_code == 3, "already gone: no error"


def test_a_runtime_that_refuses_its_environment_exits_2(harness: Harness) -> None:
    """The runtime's own exit code (2: configuration error) comes through the engine."""
    spec = harness.spec(IDLE)
    broken = dataclasses.replace(spec, env={**spec.env, "BOTFLEET_BOT_CONFIG": "not json"})
    ref = harness.launch(broken)
    wait_until(lambda: harness.backend.inspect(ref).is_gone, timeout=30, what="the exit")
    status = harness.backend.inspect(ref)
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 2), status


def test_remove_refuses_a_running_workload_then_forgets_it(harness: Harness) -> None:
    spec = harness.spec(IDLE)
    ref = harness.launch(spec)
    harness.started(ref, spec.bot_id)
    with pytest.raises(OrchestratorError):
        harness.backend.remove(ref)
    assert harness.backend.inspect(ref).state is WorkloadState.RUNNING
    harness.backend.stop(ref, grace_s=10)
    harness.backend.remove(ref)
    assert harness.backend.inspect(ref).state is WorkloadState.NOT_FOUND
    assert harness.backend.list_workloads({LABEL_BOT_ID: spec.bot_id}) == []
    harness.backend.remove(ref)  # forgetting twice is no error
    if harness.logs_outlive_remove:
        assert "demo bot leaving" in harness.backend.logs(ref, bot_id=spec.bot_id, tail=100)
    else:
        with pytest.raises(WorkloadNotFound):
            harness.backend.logs(ref, bot_id=spec.bot_id, tail=5)


def test_workloads_the_engine_never_had_are_not_found(harness: Harness) -> None:
    for ref in harness.unknown_refs:
        assert harness.backend.inspect(ref).state is WorkloadState.NOT_FOUND
        assert harness.backend.stop(ref, grace_s=0).state is WorkloadState.NOT_FOUND
        harness.backend.remove(ref)  # nothing to forget: no error


def test_an_unreachable_engine_is_unavailable_never_not_found(harness: Harness) -> None:
    down = harness.unreachable()
    calls: dict[str, Callable[[], object]] = {
        "launch": lambda: down.launch(harness.spec(IDLE)),
        "inspect": lambda: down.inspect(harness.unknown_refs[0]),
        "stop": lambda: down.stop(harness.unknown_refs[0], grace_s=1),
        "list_workloads": down.list_workloads,
        "logs": lambda: down.logs(harness.unknown_refs[0], bot_id="x", tail=5),
        "remove": lambda: down.remove(harness.unknown_refs[0]),
        "check_health": down.check_health,
    }
    assert set(calls) == set(OPERATIONS)
    for name in OPERATIONS:
        if name in harness.answers_offline:
            continue
        with pytest.raises(BackendUnavailable):
            calls[name]()
            pytest.fail(f"{harness.name}: {name} did not raise BackendUnavailable")


def test_list_workloads_filters_by_labels(harness: Harness) -> None:
    spec_a = harness.spec(IDLE, team="a")
    spec_b = harness.spec(IDLE, team="b")
    ref_a, ref_b = harness.launch(spec_a), harness.launch(spec_b)
    ours = {LABEL_FLEET: harness.fleet}
    assert {w.runtime_ref for w in harness.backend.list_workloads(ours)} == {ref_a, ref_b}
    everything = {w.runtime_ref for w in harness.backend.list_workloads()}
    if harness.sees_only_its_own:
        assert everything == {ref_a, ref_b}
    else:
        assert {ref_a, ref_b} <= everything
    [only_a] = harness.backend.list_workloads({**ours, "botfleet.label.team": "a"})
    assert (only_a.runtime_ref, only_a.bot_id) == (ref_a, spec_a.bot_id)
    assert [
        w.runtime_ref for w in harness.backend.list_workloads({LABEL_BOT_ID: spec_b.bot_id})
    ] == [ref_b]
    assert (
        harness.backend.list_workloads({"botfleet.label.team": "a", LABEL_BOT_ID: spec_b.bot_id})
        == []
    )


@pytest.mark.parametrize("harness", ["docker", "nomad"], indirect=True)
def test_a_second_launch_of_the_same_attempt_is_a_name_conflict(harness: Harness) -> None:
    """Engines that name workloads refuse a second one of the same name (the process backend
    names none: a pid is its handle)."""
    spec = harness.spec(IDLE)
    harness.launch(spec)
    with pytest.raises(LaunchFailed) as conflict:
        harness.backend.launch(spec)
    assert conflict.value.code == "name_conflict"
    assert len(harness.backend.list_workloads({LABEL_BOT_ID: spec.bot_id})) == 1
