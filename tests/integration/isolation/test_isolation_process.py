"""Bots are untrusted (issue 14, item 3): the process backend keeps them from each other and from
the manager. Every case performs the attack from inside a real bot process and asserts it fails.

With a real manager (root, so each bot runs under a uid of its own): an attacking bot
(tests/bots/snoop.py) tries another bot's /proc/PID/environ, memory, signals and working
directory, the manager's environment, and the manager's data folder (admin_token, secrets.key,
the SQLite file); its own environment holds no secret; the children it leaves die with it.
Without the fix the same reads succeed: the A/B case shows a bot under the manager's own user
reading what a bot under its own uid cannot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from botfleet.orchestrators import LaunchFailed, LaunchSpec
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.runtime.env import BOT_TOKEN, SECRET_ENV_FD, RuntimeConfigError, with_secret_env
from tests.support import (
    ADMIN_TOKEN,
    REPO,
    Manager,
    RedisServer,
    kill_leftover_bots,
    wait_for_status,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bots get uids of their own as root")

UID_BASE, UID_COUNT = 200000, 10000
VICTIM_SECRET = f"victim-{uuid.uuid4().hex}"
SNOOP_SECRET = f"snoop-{uuid.uuid4().hex}"
#: The manager's files the snoop goes for (the SQLite file: the database is in the data folder).
MANAGER_FILES = ("admin_token", "secrets.key", "botfleet.db")
REFUSED = {"EACCES", "EPERM"}


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A folder every uid may traverse (pytest's tmp_path is 0700): only the data folder's own
    mode and its files' modes then stand between a bot and the manager's files."""
    # not under /tmp: each bot has a private /tmp (sandbox.py), where the files would be absent
    root = Path(tempfile.mkdtemp(prefix="bf-isolation-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def manager(open_root: Path, redis_server: RedisServer) -> Iterator[Manager]:
    data_dir = open_root / "manager"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older installation left it
    (data_dir / "admin_token").write_text(ADMIN_TOKEN + "\n")  # the manager reads it from there
    instance = Manager(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'botfleet.db'}",
        redis_url=redis_server.url,
        extra_env={
            "BOTFLEET_ADMIN_TOKEN": "",
            "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.snoop"]',
            "PYTHONPATH": str(REPO),  # the snoop bot's module
        },
    )
    try:
        yield instance.start()
    finally:
        instance.stop()
        kill_leftover_bots(data_dir)


def _record(manager: Manager, bot: dict[str, Any]) -> dict[str, Any]:
    return json.loads((manager.data_dir / "workloads" / f"{bot['runtime_ref']}.json").read_text())


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (pid 1 may reap lazily)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].split()[0] not in "ZX"


def test_a_bot_reaches_nothing_of_other_bots_or_the_manager(manager: Manager) -> None:
    _, client = manager.new_user()
    victim = client.post(
        "/bots", json={"bot": "demo", "config": {}, "secrets": {"api_key": VICTIM_SECRET}}
    ).json()
    victim = wait_for_status(client, victim["id"], {"active"})
    victim_record = _record(manager, victim)
    victim_pid = victim_record["pid"]
    for name in MANAGER_FILES:  # the attacks below must fail on files that are there
        assert (manager.data_dir / name).exists(), name

    snoop = client.post(
        "/bots",
        json={
            "bot": "tests.bots.snoop:SnoopBot",
            "config": {
                "victim_pid": victim_pid,
                "victim_workdir": victim_record["workdir"],
                "data_dir": str(manager.data_dir),
                "files": list(MANAGER_FILES),
            },
            "secrets": {"api_key": SNOOP_SECRET},
        },
    ).json()
    snoop = wait_for_status(client, snoop["id"], {"active"})
    logs = wait_until(
        lambda: "SNOOP " in (text := client.get(f"/bots/{snoop['id']}/logs").text) and text,
        timeout=20,
        what="the snoop's verdict in its log",
    )
    verdict = json.loads(logs.split("SNOOP ", 1)[1].splitlines()[0])

    refused = {name: result for name, result in verdict["attacks"].items()}
    assert all(result in REFUSED for result in refused.values()), refused
    assert set(refused) >= {"victim_environ", "manager_environ", "victim_workdir", *MANAGER_FILES}
    assert verdict["got_secret"], "its own secrets reach it (through the pipe)"
    assert not verdict["secret_in_environ"] and verdict["secret_names_in_environ"] == []
    assert VICTIM_SECRET not in logs and SNOOP_SECRET not in logs

    snoop_record = _record(manager, snoop)
    assert UID_BASE <= verdict["uid"] < UID_BASE + UID_COUNT
    assert verdict["uid"] == snoop_record["uid"] != victim_record["uid"]
    assert (verdict["gid"], verdict["groups"]) == (UID_BASE, [])
    assert verdict["cwd"] == verdict["home"] == snoop_record["workdir"]
    workdir = Path(snoop_record["workdir"])
    assert (workdir.stat().st_uid, stat.S_IMODE(workdir.stat().st_mode)) == (verdict["uid"], 0o700)
    for environ in (victim_pid, snoop_record["pid"]):
        assert b"BOTFLEET_BOT_TOKEN" not in Path(f"/proc/{environ}/environ").read_bytes()

    # Children die with the bot: the one in its group and the one that escaped it (setsid).
    children = verdict["children"]
    assert all(_alive(pid) for pid in children)
    assert client.post(f"/bots/{snoop['id']}/stop").status_code == 202
    wait_for_status(client, snoop["id"], {"completed"})
    wait_until(lambda: not any(_alive(pid) for pid in children), timeout=20, what="children")
    wait_until(lambda: not workdir.exists(), timeout=20, what="the work dir removed")
    assert client.get(f"/bots/{victim['id']}").json()["status"] == "active"

    # The data folder is the manager's alone, and so is every file it wrote there.
    assert stat.S_IMODE(manager.data_dir.stat().st_mode) == 0o700
    written = [
        path
        for path in manager.data_dir.rglob("*")
        if path.is_file() and path.name not in ("manager.log", "admin_token")  # the test's own
    ]
    assert {p.name for p in written} >= {"secrets.key", "botfleet.db", f"{victim['id']}.log"}
    loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert all(mode == "0o600" for mode in loose.values()), loose


READER = """
import os
from pathlib import Path
try:
    Path(os.environ["TARGET"]).read_bytes()
    print("verdict: read", flush=True)
except OSError as exc:
    print("verdict:", type(exc).__name__, flush=True)
"""


def _spec(target: Path) -> LaunchSpec:
    return LaunchSpec(
        bot_id=f"b{uuid.uuid4().hex[:8]}",
        user_id="user-1",
        attempt=1,
        image=None,
        env={"TARGET": str(target)},
        secret_env={"BOTFLEET_BOT_TOKEN": "t"},
    )


def _verdict(backend: ProcessOrchestrator, spec: LaunchSpec) -> tuple[str, dict[str, Any]]:
    ref = backend.launch(spec)
    wait_until(lambda: backend.inspect(ref).is_gone, timeout=20, what="the reader's exit")
    text = backend.logs(ref, bot_id=spec.bot_id, tail=20)
    record = json.loads((backend.config.data_dir / "workloads" / f"{ref}.json").read_text())
    backend.remove(ref)
    return text.split("verdict: ", 1)[1].split()[0], record


def test_the_bots_uid_is_what_keeps_it_out(tmp_path: Path, open_root: Path) -> None:
    """A/B: the manager's 0600 file in a folder anyone may enter. A bot under the manager's own
    user (bot_uids=off: what main did for every bot) reads it; under its own uid it cannot."""
    target = open_root / "manager-secret"
    target.write_text("sealing key")
    target.chmod(0o600)

    def backend(mode: str) -> ProcessOrchestrator:
        config = ProcessOrchestratorConfig(
            data_dir=tmp_path / mode, command=[sys.executable, "-c", READER], bot_uids=mode
        )
        return ProcessOrchestrator(config)

    assert _verdict(backend("off"), _spec(target))[0] == "read"
    verdict, record = _verdict(backend("on"), _spec(target))
    assert verdict == "PermissionError"
    assert UID_BASE <= record["uid"] < UID_BASE + UID_COUNT
    assert not Path(record["workdir"]).exists(), "remove deletes the bot's working directory"


def test_bot_uids_on_fails_clearly_where_a_uid_cannot_run_the_bot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An interpreter the bots' uids cannot reach (pytest's tmp_path is 0700): `on` refuses to
    launch, and so does `auto` in a root manager (on main it warned and ran the bot as root);
    `off` runs it as the manager's user."""
    hidden = tmp_path / "python"
    hidden.symlink_to(sys.executable)

    def backend(mode: str) -> ProcessOrchestrator:
        config = ProcessOrchestratorConfig(
            data_dir=tmp_path / mode, command=[str(hidden), "-c", READER], bot_uids=mode
        )
        return ProcessOrchestrator(config)

    with pytest.raises(LaunchFailed) as refused:
        backend("on").launch(_spec(tmp_path))
    assert refused.value.code == "isolation_unavailable"
    assert f"as uid {UID_BASE + UID_COUNT - 1}" in str(refused.value)  # says what failed

    warnings = caplog.at_level(logging.WARNING, logger="botfleet.orchestrators.process")
    with warnings, pytest.raises(LaunchFailed) as refused:
        backend("auto").launch(_spec(tmp_path))
    assert refused.value.code == "isolation_unavailable"
    assert "BOTFLEET_PROCESS_BOT_UIDS=off" in str(refused.value)
    assert "CANNOT run under their own uids" in caplog.text and "setfacl" in caplog.text
    assert not list((tmp_path / "auto" / "workloads").glob("*.json")), "nothing launched"
    _, record = _verdict(backend("off"), _spec(tmp_path))
    assert record["uid"] is None


LEAVES_A_CHILD = """
import subprocess
child = subprocess.Popen(["sleep", "120"])
print("child:", child.pid, flush=True)
"""


@pytest.mark.parametrize("mode", ["off", "on"])
def test_children_die_with_a_bot_that_already_exited(tmp_path: Path, mode: str) -> None:
    """The bot exits at once, leaving `sleep 120` in its group: on main, stop saw the bot gone
    and signalled nothing, and the child lived on. The workload runs while the child does."""
    config = ProcessOrchestratorConfig(
        data_dir=tmp_path, command=[sys.executable, "-c", LEAVES_A_CHILD], bot_uids=mode
    )
    backend = ProcessOrchestrator(config)
    spec = _spec(tmp_path)
    ref = backend.launch(spec)
    main = json.loads((tmp_path / "workloads" / f"{ref}.json").read_text())["pid"]
    wait_until(lambda: "child: " in backend.logs(ref, bot_id=spec.bot_id, tail=5), timeout=20)
    child = int(backend.logs(ref, bot_id=spec.bot_id, tail=5).split("child: ", 1)[1].split()[0])
    wait_until(lambda: not _alive(main), timeout=20, what="the bot's exit")
    assert _alive(child), "the child outlives its parent until the stop"
    assert not backend.inspect(ref).is_gone, "a workload with a live process is not gone"
    assert backend.stop(ref, grace_s=1).exit_code == 0
    wait_until(lambda: not _alive(child), timeout=10, what="the child killed by the stop")
    backend.remove(ref)


def test_the_runtime_reads_its_secrets_from_the_pipe_and_closes_it() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, json.dumps({BOT_TOKEN: "tok"}).encode())
    os.close(write_fd)
    merged = with_secret_env({"BOTFLEET_BOT_ID": "b1", SECRET_ENV_FD: str(read_fd)})
    assert merged == {"BOTFLEET_BOT_ID": "b1", BOT_TOKEN: "tok"}
    with pytest.raises(OSError):
        os.fstat(read_fd)  # closed: the bot's children never inherit it

    for payload in (b"[1]", b"{not json", b'{"k": 1}'):
        read_fd, write_fd = os.pipe()
        os.write(write_fd, payload)
        os.close(write_fd)
        with pytest.raises(RuntimeConfigError, match=SECRET_ENV_FD):
            with_secret_env({SECRET_ENV_FD: str(read_fd)})
    assert with_secret_env({"A": "1"}) == {"A": "1"}  # docker and nomad: nothing to read
