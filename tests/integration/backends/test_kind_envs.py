"""Kinds that bring their own package (issue 28): the process backend builds one virtualenv per
kind and version (orchestrators/process/kind_envs.py) and runs the kind's bots with its python;
an `exec` kind's argv runs instead of the runtime, with the same isolation, on process and docker.

No internet: the bot package is a wheel this file writes (zipfile), and the runtime's wheel is
made from the manager's own files. A hanging download is a local socket that never answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from botfleet.orchestrators.base import KindEnvFailed, LaunchSpec
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.orchestrators.process.kind_envs import MARKER, KindEnvs
from botfleet.runtime.env import RuntimeEnv
from tests.support import RUNTIME_IMAGE, wait_until

pytestmark = pytest.mark.timeout(300)

PACKAGE = f"kindbot_{uuid.uuid4().hex[:8]}"
BOT_MODULE = """
import os, sys
from botfleet.runtime.bot import Bot

class KindBot(Bot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        print(f"kindbot created prefix={sys.prefix} uid={os.getuid()}", flush=True)
"""


def make_wheel(out: Path, name: str, files: dict[str, str], *, scripts: str = "") -> Path:
    """A pure-Python wheel, written by hand: no build backend, no network."""
    info = f"{name}-0.1.0.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n"
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if scripts:
        entries[f"{info}/entry_points.txt"] = f"[console_scripts]\n{scripts}\n"

    def record(path: str, text: str) -> str:
        digest = hashlib.sha256(text.encode()).digest()
        return f"{path},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},"

    lines = [record(p, t) for p, t in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = "\n".join(lines) + "\n"
    wheel = out / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in entries.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def open_root() -> Iterator[Path]:
    """Where bot uids may read (pytest's tmp_path is 0700), and not under the bots' private
    /tmp (sandbox.py)."""
    root = Path(tempfile.mkdtemp(prefix="bf-kind-envs-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bot_package(open_root: Path) -> dict[str, Any]:
    wheels = open_root / "wheels"
    wheels.mkdir()
    files = {f"{PACKAGE}/__init__.py": BOT_MODULE}
    wheel = make_wheel(wheels, PACKAGE, files, scripts=f"{PACKAGE}-hello = {PACKAGE}:KindBot")
    return {"wheels": [str(wheel)]}


@pytest.fixture(scope="module")
def built(open_root: Path, bot_package: dict[str, Any]) -> tuple[KindEnvs, Path]:
    envs = KindEnvs(open_root / "kind-envs")
    return envs, envs.ensure("kindbot", 1, bot_package)


def test_an_env_is_built_once_then_reused(
    built: tuple[KindEnvs, Path], bot_package: dict[str, Any]
) -> None:
    envs, python = built
    env_dir = python.parent.parent
    assert importlib.util.find_spec(PACKAGE) is None, "the manager's env never gets the package"
    marker = json.loads((env_dir / MARKER).read_text())
    assert marker["package"] == bot_package and marker["name"] == "kindbot"
    # readable by bot uids, writable by the manager alone
    for path in (env_dir, python.parent, env_dir / "lib"):
        assert path.stat().st_mode & 0o777 == 0o755, path
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    module = site / PACKAGE / "__init__.py"
    assert module.stat().st_mode & 0o777 == 0o644 and module.stat().st_uid == os.geteuid()
    # a console script names the final interpreter, not the build's temporary directory
    script = (python.parent / f"{PACKAGE}-hello").read_text()
    assert script.startswith(f"#!{python}") and ".build-" not in script
    assert not list(envs.root.glob(".build-*")), "no build directory left"

    started = time.monotonic()
    again = KindEnvs(envs.root).ensure("kindbot", 1, bot_package)  # another manager, too
    assert again == python and time.monotonic() - started < 1.0
    assert json.loads((env_dir / MARKER).read_text())["built_at"] == marker["built_at"]
    assert envs.ready("kindbot", 1, bot_package) == python, "ready: a stat, for the launcher"
    assert envs.ready("kindbot", 3, bot_package) is None, "not built: not ready, nor built"
    assert not list(envs.root.glob("kindbot-3-*"))
    assert envs.ensure("kindbot", 2, bot_package) != python, "a new version, a new env"


def test_concurrent_ensures_build_once(tmp_path: Path, bot_package: dict[str, Any]) -> None:
    builds = []

    class Counting(KindEnvs):
        def _build(self, *args: Any, **kwargs: Any) -> None:
            builds.append(threading.get_ident())
            super()._build(*args, **kwargs)

    barrier = threading.Barrier(2)
    found: list[Path] = []

    def ensure() -> None:
        envs = Counting(tmp_path / "kind-envs")  # one instance each, as two managers would
        barrier.wait()
        found.append(envs.ensure("twice", 1, bot_package))

    threads = [threading.Thread(target=ensure) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert len(found) == 2 and found[0] == found[1] and found[0].exists()
    assert len(builds) == 1, "the second waited for the first's env"


def test_a_broken_requirement_fails_with_pips_message(tmp_path: Path) -> None:
    envs = KindEnvs(tmp_path / "kind-envs")
    with pytest.raises(KindEnvFailed) as failed:
        envs.ensure("broken", 1, {"requirements": ["this is not a requirement!"]})
    assert failed.value.code == "kind_env_failed"
    assert "pip install failed" in str(failed.value)
    assert "Invalid requirement" in failed.value.output_tail, failed.value.output_tail
    assert [p.name for p in envs.root.iterdir() if not p.name.startswith(".")] == []
    assert not list(envs.root.glob(".build-*")), "the half-built env is removed"


def test_a_package_pip_must_not_see_is_refused(tmp_path: Path) -> None:
    envs = KindEnvs(tmp_path / "kind-envs")
    for package in ({"requirements": ["--index-url=http://evil"]}, {"wheels": ["rel.whl"]}, {}):
        with pytest.raises(KindEnvFailed):
            envs.ensure("refused", 1, package)
    with pytest.raises(KindEnvFailed):
        envs.ensure("../escape", 1, {"requirements": ["x"]})


def test_a_hanging_download_is_killed_at_the_timeout(tmp_path: Path) -> None:
    """pip waits on a server that accepts and never answers: it is killed at the timeout (its
    connection closes), and the env is not kept."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hang-0.1-py3-none-any.whl"
        envs = KindEnvs(tmp_path / "kind-envs", timeout_s=15)
        started = time.monotonic()
        with pytest.raises(KindEnvFailed) as failed:
            envs.ensure("hang", 1, {"wheels": [url]})
        assert 15 <= time.monotonic() - started < 45
        assert "pip install: killed after 15 s" in str(failed.value)
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            while conn.recv(4096):  # the request, then EOF: pip is gone
                pass
    assert not [p for p in envs.root.iterdir() if p.is_dir() and p.name != ".runtime"]


def test_an_env_over_the_size_bound_is_removed(tmp_path: Path) -> None:
    envs = KindEnvs(tmp_path / "kind-envs", max_mb=5)  # pip alone is bigger
    with pytest.raises(KindEnvFailed) as failed:
        envs.ensure("fat", 1, {"requirements": ["anything"]})
    assert "over 5 MiB" in str(failed.value)
    assert not [p for p in envs.root.iterdir() if p.is_dir() and p.name != ".runtime"]


def _runtime_spec(bot: str, **fields: Any) -> LaunchSpec:
    bot_id = f"k{uuid.uuid4().hex[:8]}"
    rendered = RuntimeEnv(
        bot_id=bot_id,
        token="t",
        callback_url="http://127.0.0.1:9",  # nothing answers: the bot is stopped before
        redis_url="redis://127.0.0.1:9/0",
        command_channel=f"bot:{bot_id}:commands",
        bot=bot,
    ).render()
    return LaunchSpec(
        bot_id=bot_id, user_id="u", attempt=1, image=None, env=rendered.env,
        secret_env=rendered.secret_env, **fields,
    )  # fmt: skip


def _line(backend: ProcessOrchestrator, spec: LaunchSpec, start: str) -> str | None:
    lines = backend.logs(spec.bot_id, bot_id=spec.bot_id, tail=50).splitlines()
    return next((line for line in lines if line.startswith(start)), None)


def _record(backend: ProcessOrchestrator, ref: str) -> dict[str, Any]:
    return json.loads((backend.config.data_dir / "workloads" / f"{ref}.json").read_text())


def test_the_process_backend_runs_a_kind_with_its_envs_python(
    tmp_path: Path, built: tuple[KindEnvs, Path]
) -> None:
    """The runtime (from the env) imports and creates the kind's class, which the manager's
    own environment cannot import, under the bot's uid when the manager is root."""
    _, python = built
    backend = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path / "data"))
    spec = _runtime_spec(f"{PACKAGE}:KindBot", python=str(python))
    ref = backend.launch(spec)
    try:
        line = wait_until(lambda: _line(backend, spec, "kindbot created"), timeout=60)
        assert f"prefix={python.parent.parent}" in line
        uid = _record(backend, ref)["uid"]
        assert f"uid={os.geteuid() if uid is None else uid}" in line
    finally:
        backend.stop(ref, grace_s=1)
        backend.remove(ref)


EXEC_SCRIPT = r"""
echo "exec-env: $KIND_GREETING pythonpath=${PYTHONPATH-unset}"
echo "exec-secret: $(cat <&$BOTFLEET_SECRET_ENV_FD)"  # bash: dash reads fds 0-9 only
echo "exec-uid: $(id -u)"
echo "exec-cgroup: $(cat /proc/self/cgroup | tr '\n' ' ')"
echo "exec-tmp: $(test -e "$MANAGER_TMP_FILE" && echo shared || echo private)"
"""


def test_an_exec_kind_runs_its_argv_with_the_same_isolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/manager/only")
    manager_tmp = Path(tempfile.mkstemp(prefix="kind-exec-", dir="/tmp")[1])
    backend = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path / "data"))
    spec = LaunchSpec(
        bot_id=f"x{uuid.uuid4().hex[:8]}", user_id="u", attempt=1, image=None,
        env={"KIND_GREETING": "hello", "MANAGER_TMP_FILE": str(manager_tmp)},
        secret_env={"BOTFLEET_BOT_TOKEN": "tok"}, command=("/bin/bash", "-c", EXEC_SCRIPT),
    )  # fmt: skip
    ref = backend.launch(spec)
    try:
        wait_until(lambda: backend.inspect(ref).is_gone, timeout=30, what="the script's end")
        assert backend.inspect(ref).exit_code == 0
        out = dict(
            line.split(": ", 1)
            for line in backend.logs(ref, bot_id=spec.bot_id, tail=50).splitlines()
            if line.startswith("exec-")
        )
        record = _record(backend, ref)
    finally:
        backend.stop(ref, grace_s=1)
        backend.remove(ref)
        manager_tmp.unlink()
    assert out["exec-env"] == "hello pythonpath=unset", out
    assert json.loads(out["exec-secret"]) == {"BOTFLEET_BOT_TOKEN": "tok"}
    if record["uid"] is not None:
        assert out["exec-uid"] == str(record["uid"])
    else:
        assert out["exec-uid"] == str(os.geteuid())
    if record["cgroup"]:
        leaf = Path(next(iter(record["cgroup"]["dirs"].values()))).name
        assert leaf in out["exec-cgroup"], out["exec-cgroup"]
    if os.geteuid() == 0:  # the private /tmp needs a root manager
        assert out["exec-tmp"] == "private"


def test_the_docker_backend_runs_an_exec_kinds_argv(docker_engine: None) -> None:
    import docker

    from botfleet.orchestrators.docker import DockerOrchestrator, DockerOrchestratorConfig

    backend = DockerOrchestrator(DockerOrchestratorConfig(network="host"))
    spec = LaunchSpec(
        bot_id=f"x{uuid.uuid4().hex[:8]}", user_id="u", attempt=1, image=RUNTIME_IMAGE,
        env={"KIND_GREETING": "hello"}, secret_env={"BOTFLEET_BOT_TOKEN": "tok"},
        command=("/bin/sh", "-c", 'echo "exec-docker $(id -u) $KIND_GREETING $BOTFLEET_BOT_TOKEN"'),
    )  # fmt: skip
    ref = backend.launch(spec)
    try:
        wait_until(lambda: backend.inspect(ref).is_gone, timeout=60, what="the container's end")
        assert backend.inspect(ref).exit_code == 0
        assert "exec-docker 10001 hello tok" in backend.logs(ref, bot_id=spec.bot_id, tail=20)
        attrs = docker.from_env().containers.get(ref).attrs
        assert attrs["Config"]["Entrypoint"] == list(spec.command or ())
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True, "the same hardening"
    finally:
        backend.stop(ref, grace_s=1)
        backend.remove(ref)
        backend.close()
