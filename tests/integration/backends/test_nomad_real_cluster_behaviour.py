"""Issues 17 and 31: the nomad backend against what a real Nomad answers, point by point (1-7).

Each case drives the backend (and, for point 2, a real manager) against the stand-in
(tests/nomad_standin/), which answers as Nomad's source shows (the file is named at each
behaviour there): an invalid job is HTTP 500, logs of a task that never started 404 and
collected ones 404 too, an error after a log stream began inside its 200 answer, a lost node's
allocation replaced unless the job says otherwise (and a starting one replaced all the same), a
job that fits no node a blocked evaluation, a register of an existing ID an update, a token
without alloc-lifecycle 403 on a signal. Each asserts what a user would notice; before its issue
each failed (point 3's first case excepted: the backend already read logs as bytes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from botfleet.orchestrators import BackendUnavailable, LaunchFailed, LaunchSpec
from botfleet.orchestrators.base import WorkloadState
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig, variable_path
from botfleet.orchestrators.nomad.logs import LogsGone
from tests.nomad_standin import StandIn, scheduler
from tests.support import Manager, RedisServer, running_manager, wait_for_status, wait_until

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(tmp_path / "nomad", placement_delay_s=0.2).start()
    yield server
    server.stop()


def _backend(standin: StandIn, script: str = SLEEPER, **overrides: object) -> NomadOrchestrator:
    settings: dict[str, object] = {
        "address": standin.url,
        "driver": "raw_exec",
        "command": [sys.executable, "-c", script],
        "job_prefix": f"real-{uuid.uuid4().hex[:6]}-",
        **overrides,
    }
    return NomadOrchestrator(NomadOrchestratorConfig(**settings))  # type: ignore[arg-type]


def _spec(bot_id: str = "bot", *, secret: str = "tok-secret") -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id,
        user_id="user-1",
        attempt=1,
        image=None,
        env={"BOTFLEET_BOT_ID": bot_id},
        secret_env={"BOTFLEET_BOT_TOKEN": secret},
    )


def _running(backend: NomadOrchestrator, ref: str) -> None:
    wait_until(lambda: backend.inspect(ref).state == WorkloadState.RUNNING, timeout=15)


# ---- 1. an invalid job is HTTP 500, as an outage is ----------------------------------------------


def test_1_an_invalid_job_is_job_rejected_and_leaves_no_secrets(standin: StandIn) -> None:
    backend = _backend(standin, memory_mb=4)  # Nomad's minimum is 10
    with pytest.raises(LaunchFailed) as failure:
        backend.launch(_spec())
    assert failure.value.code == "job_rejected", failure.value
    assert "MemoryMB" in str(failure.value)
    [register] = standin.requests_to("POST", "/v1/jobs")
    assert register.status == 500, "the stand-in answers as Nomad does"
    assert standin.variable(variable_path(backend.job_id(_spec()))) is None


def test_1_an_outage_while_registering_is_unavailable_and_leaves_no_secrets(
    standin: StandIn,
) -> None:
    backend = _backend(standin)
    standin.fail_requests[("POST", "/v1/jobs")] = 503  # a proxy in front of a lost leader
    with pytest.raises(BackendUnavailable):
        backend.launch(_spec())
    assert standin.variable(variable_path(backend.job_id(_spec()))) is None


# ---- 2. logs of a task that never started are 404 ----------------------------------------------


def test_2_logs_of_a_task_that_never_started_are_empty(standin: StandIn) -> None:
    backend = _backend(standin, command=["/nonexistent/botfleet-runtime"])
    ref = backend.launch(_spec())
    wait_until(lambda: backend.inspect(ref).state == WorkloadState.EXITED, timeout=15)
    assert "Driver Failure" in backend.inspect(ref).detail
    assert backend.logs(ref, bot_id="bot", tail=10) == ""
    answers = [r.status for r in standin.requests_to("GET", "/v1/client/fs/logs/")]
    assert answers and set(answers) == {404}, "the stand-in answers as Nomad does"


def test_2_logs_nomad_collected_are_an_error_not_an_empty_log(standin: StandIn) -> None:
    """Issue 31, 4b. Collected logs answer 404 "Unknown allocation" (client/fs_endpoint.go),
    not the "not started yet" of a task with no output: LogsGone, never ""."""
    backend = _backend(standin, "print('last words', flush=True)")
    ref = backend.launch(_spec())
    wait_until(lambda: backend.inspect(ref).state == WorkloadState.EXITED, timeout=15)
    assert "last words" in backend.logs(ref, bot_id="bot", tail=5)
    standin.collect(ref)
    with pytest.raises(LogsGone) as gone:
        backend.logs(ref, bot_id="bot", tail=5)
    assert gone.value.code == "logs_gone" and "collected" in str(gone.value)
    assert {r.status for r in standin.requests_to("GET", "/v1/client/fs/logs/")} == {200, 404}


@pytest.fixture
def manager(
    standin: StandIn, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    extra_env = {
        "BOTFLEET_NOMAD_ADDRESS": standin.url,
        "BOTFLEET_NOMAD_DRIVER": "raw_exec",
        "BOTFLEET_NOMAD_COMMAND": json.dumps(["/nonexistent/botfleet-runtime"]),
    }
    root = tmp_path_factory.mktemp("nomad-real-manager")
    with running_manager(root, redis_server.url, backend="nomad", extra_env=extra_env) as instance:
        yield instance


def test_2_a_driver_failure_is_recorded_and_its_job_and_secrets_removed(
    manager: Manager, standin: StandIn
) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "secrets": {"k": "v"}}).json()
    done = wait_for_status(client, bot["id"], {"failed", "completed"}, timeout=60)
    assert (done["status"], done["status_reason"]) == ("failed", "exited_before_started")
    job_id = done["runtime_ref"]
    wait_until(
        lambda: standin.job(job_id) is None and standin.variable(variable_path(job_id)) is None,
        timeout=30,
        what="the failed job purged and its secrets variable deleted",
    )


# ---- 3. logs are bytes, read framed: UTF-8, and an error after the first frame is no output ----


def test_3_logs_are_utf8_whatever_the_answer_says(standin: StandIn) -> None:
    text = "héllo \u2013 ✓"
    backend = _backend(standin, f"import time; print({text!r}, flush=True); time.sleep(60)")
    ref = backend.launch(_spec())
    _running(backend, ref)
    wait_until(lambda: text in backend.logs(ref, bot_id="bot", tail=5), timeout=10)
    follower = backend.follow_logs(ref, bot_id="bot", tail=5)
    assert text in follower.read().decode()
    backend.stop(ref, grace_s=1)


def test_3_an_error_after_the_stream_began_is_a_failure_never_output(standin: StandIn) -> None:
    """Issue 31, 4c. Nomad writes an error that comes after the first byte into the 200 answer
    it began (command/agent/http.go `wrap`): read framed, it is told apart and reported."""
    backend = _backend(standin)
    ref = backend.launch(_spec())
    _running(backend, ref)
    wait_until(lambda: "up" in backend.logs(ref, bot_id="bot", tail=5), timeout=10)
    error = 'failed to stream "alloc/logs/bot.stdout.0": read: input/output error'
    standin.break_log_stream(ref, error)
    with pytest.raises(BackendUnavailable) as broken:
        backend.logs(ref, bot_id="bot", tail=5)
    assert error in str(broken.value) and "log stream failed" in str(broken.value)
    [answer] = [r for r in standin.requests_to("GET", "/v1/client/fs/logs/") if error in r.answer]
    assert answer.status == 200, "the stand-in answers as Nomad does"
    assert backend.logs(ref, bot_id="bot", tail=5) == "up", "the next read is whole again"
    # A follower keeps the whole lines Nomad sent before its error, and reads on after them.
    follower = backend.follow_logs(ref, bot_id="bot", tail=5)
    assert follower.read() == b"up\n"
    alloc = standin.alloc_of(ref)
    assert alloc is not None
    with (alloc.dir / "alloc" / "logs" / "bot.stdout.0").open("ab") as stdout:
        stdout.write(b"next\nhalf")
    standin.break_log_stream(ref, error)
    assert follower.read() == b"next\n"
    backend.stop(ref, grace_s=1)


# ---- 4. a lost node's allocation is replaced unless Disconnect says no --------------------------


def test_4_a_partitioned_node_gets_no_second_copy_and_stops_the_first(standin: StandIn) -> None:
    backend = _backend(standin, stop_on_client_after_s=1.5)
    ref = backend.launch(_spec())
    _running(backend, ref)
    standin.disconnect(ref)
    seen = 0

    def partitioned_copy_gone() -> bool:
        nonlocal seen
        live = standin.live_tasks(ref)
        seen = max(seen, len(live))
        return not live

    # The client cut off from its servers stops the bot itself (StopOnClientAfter, 1.5 s): the
    # later marker. A second copy would have been placed before it (and is still counted).
    wait_until(partitioned_copy_gone, timeout=5, interval=0.05, what="the partitioned copy gone")
    assert seen == 1, "Nomad placed a second copy of the bot, with its token"
    job = standin.job(ref)
    assert job is not None and len(job.allocs) == 1


def test_4_a_second_copy_is_killed_when_the_bot_is_inspected(standin: StandIn) -> None:
    """A job without the Disconnect block (from an older botfleet, or an operator's action):
    Nomad runs a replacement beside the original; the reconciler's next look kills it."""
    backend = _backend(standin)
    spec = _spec(secret="")
    job = backend.job_spec(spec, secret_names=[])
    job["TaskGroups"][0].pop("Disconnect", None)
    backend.client.jobs.register_job({"Job": job})
    ref = job["ID"]
    _running(backend, ref)
    standin.disconnect(ref)
    wait_until(lambda: len(standin.live_tasks(ref)) == 2, timeout=10, what="the replacement")
    [original] = [a for a in standin.job(ref).allocs if not a.previous_alloc]  # type: ignore[union-attr]
    backend.inspect(ref)
    wait_until(
        lambda: [a.id for a in standin.live_tasks(ref)] == [original.id],
        timeout=10,
        what="the second copy killed, the original left running",
    )
    [kill] = standin.requests_to("POST", "/v1/client/allocation/")
    assert kill.body == {"Signal": "SIGKILL", "Task": "bot"}


@pytest.fixture
def slow_reports(tmp_path: Path) -> Iterator[StandIn]:
    """A client that starts tasks at once but tells the servers only much later."""
    server = StandIn(tmp_path / "slow", placement_delay_s=0.2, report_delay_s=60).start()
    yield server
    server.stop()


def test_4_a_bot_lost_while_starting_is_unknown_until_nomad_counts_it_stopped(
    slow_reports: StandIn,
) -> None:
    """Issue 31, 4a. With Disconnect.Replace false, an allocation still pending when its node
    goes down is lost and replaced all the same (scheduler/reconciler/filters.go); its task
    may run on the cut-off client until StopOnClientAfter. So: unknown, never an exit, until
    Nomad itself counts it stopped (WaitClientStop: lost + 1 s + 5 s here); then ended
    `node_lost`, and the replacement Nomad placed then is killed as a second copy."""
    standin = slow_reports
    backend = _backend(standin, stop_on_client_after_s=1, stop_grace_s=1)
    ref = backend.launch(_spec())
    wait_until(lambda: len(standin.live_tasks(ref)) == 1, timeout=10, what="the task started")
    assert backend.inspect(ref).state == WorkloadState.PENDING, "the servers were not told yet"
    standin.disconnect(ref)
    lost = backend.inspect(ref)
    assert lost.state == WorkloadState.UNKNOWN and "may still run" in lost.detail, lost
    job = standin.job(ref)
    assert job is not None and job.allocs[0].client_status == "lost"

    def replacement_running() -> bool:
        return len(job.allocs) == 2 and bool(standin.live_tasks(ref))

    wait_until(replacement_running, timeout=15, what="Nomad's replacement of the lost alloc")
    assert job.allocs[0].client_stopped, "its client stopped the first copy before"
    ended = backend.inspect(ref)  # kills the replacement: a copy botfleet never asked for
    assert (ended.state, ended.exit_code, ended.reason) == (WorkloadState.EXITED, None, "node_lost")
    wait_until(lambda: not standin.live_tasks(ref), timeout=10, what="the replacement killed")
    [kill] = standin.requests_to("POST", f"/v1/client/allocation/{job.allocs[1].id}/signal")
    assert kill.body == {"Signal": "SIGKILL", "Task": "bot"}


# ---- 5. the default image is never :latest ------------------------------------------------------


def test_5_the_default_image_is_versioned_and_built_locally() -> None:
    image = NomadOrchestratorConfig().default_image
    name, _, tag = image.rpartition(":")
    assert name == "botfleet-runtime" and tag and tag != "latest", image
    # scripts/build-images.sh tags the runtime with that version, so Nomad's docker driver finds
    # it on the client instead of pulling it.
    found = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True, text=True
    )
    assert found.returncode == 0, f"{image} missing: run scripts/build-images.sh"


# ---- 6. placement failures are visible ---------------------------------------------------------


@pytest.fixture
def small_node(tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(tmp_path / "small", placement_delay_s=0.2, memory_mb=256).start()
    yield server
    server.stop()


def test_6_a_bot_nomad_cannot_place_fails_no_capacity_with_nomads_reason(
    small_node: StandIn,
) -> None:
    backend = _backend(small_node)  # 512 MB per bot; the node has 256
    with pytest.raises(LaunchFailed) as failure:
        backend.launch(_spec())
    assert failure.value.code == "no_capacity"
    assert "dimension 'memory' exhausted on 1 nodes" in str(failure.value)
    ref = backend.job_id(_spec())
    assert small_node.job(ref) is None, "the blocked job is purged"
    assert small_node.variable(variable_path(ref)) is None


def test_6_without_waiting_the_reason_is_in_the_status(small_node: StandIn) -> None:
    backend = _backend(small_node, placement_wait_s=0)
    ref = backend.launch(_spec())
    wait_until(lambda: "memory" in backend.inspect(ref).detail, timeout=10)
    assert backend.inspect(ref).state == WorkloadState.PENDING
    final = backend.stop(ref, grace_s=0)
    assert final.is_gone and "Nomad could not place the bot" in final.detail


def test_6_jobs_may_run_in_any_datacenter_by_default(standin: StandIn) -> None:
    assert NomadOrchestratorConfig().datacenters == ["*"]
    backend = _backend(standin)  # the stand-in's node is in dc1, as a dev agent's
    ref = backend.launch(_spec())
    _running(backend, ref)
    backend.stop(ref, grace_s=1)


# ---- 7b. a launch creates, never updates (issue 31, 4d) -------------------------------------


def test_7b_a_launch_never_updates_a_job_or_variable_of_its_id(standin: StandIn) -> None:
    """Registering an ID that exists updates that job (nomad/job_endpoint.go `Register`), and
    writing a variable replaces it: the launch registers with EnforceIndex and JobModifyIndex 0
    and writes the variable with cas=0, so another's job or variable of the same ID, even one
    created between our two writes, fails the launch `name_conflict` and is left as it was."""
    backend = _backend(standin)
    spec = _spec(secret="ours")
    ref = backend.job_id(spec)
    theirs = backend.job_spec(spec, secret_names=[])
    theirs["Meta"]["owner"] = "someone-else"
    # Another client registers the same ID after our variable was written, before our job.
    standin.before_next[("POST", "/v1/jobs")] = lambda: scheduler.register(
        standin.cluster, "default", {"Job": theirs}
    )
    with pytest.raises(LaunchFailed) as conflict:
        backend.launch(spec)
    assert conflict.value.code == "name_conflict", conflict.value
    job = standin.job(ref)
    assert job is not None and (job.spec["Meta"]["owner"], job.version) == ("someone-else", 0)
    ours = [r for r in standin.requests_to("POST", "/v1/jobs") if r.body.get("EnforceIndex")]
    assert [(r.body["JobModifyIndex"], r.status) for r in ours] == [(0, 500)]
    assert standin.variable(variable_path(ref)) is None, "the variable this launch wrote goes"

    # A variable of the ID that exists already is neither replaced nor deleted, nor repeated.
    other = _spec("other", secret="ours-too")
    path = variable_path(backend.job_id(other))
    backend.client.variable.create_variable(path, {"Items": {"K": "their-secret"}})
    with pytest.raises(LaunchFailed) as taken:
        backend.launch(other)
    assert taken.value.code == "name_conflict" and "their-secret" not in str(taken.value)
    assert standin.variable(path)["Items"] == {"K": "their-secret"}  # type: ignore[index]
    assert standin.job(backend.job_id(other)) is None


# ---- 7. SIGKILL needs alloc-lifecycle ----------------------------------------------------------


def test_7_a_token_without_alloc_lifecycle_is_said_not_swallowed(standin: StandIn) -> None:
    assert "alloc-lifecycle" in (NomadOrchestratorConfig.model_fields["token"].description or "")
    backend = _backend(standin, STUBBORN)  # ignores SIGTERM; KillTimeout 30 s
    ref = backend.launch(_spec())
    _running(backend, ref)
    wait_until(lambda: "up" in backend.logs(ref, bot_id="bot", tail=5), timeout=10)
    standin.deny("alloc-lifecycle")
    with pytest.raises(BackendUnavailable, match="alloc-lifecycle"):
        backend.stop(ref, grace_s=0.5)
