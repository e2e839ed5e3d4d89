"""The browser bot example (examples/browser_bot): headless Chromium, the way meeting bots run it,
as a registered kind on the process backend under the DEFAULT per-bot limits.

The bot opens a page this test serves on 127.0.0.1, reports its title and text, answers commands
(`title`, `visit`, `screenshot`) and leaves by closing the browser; every one of Chromium's
processes runs in the bot's cgroup under the bot's uid, with the memory bounded by the cgroup (no
RLIMIT_AS, under which Chromium dies with SIGTRAP), and none is left once the bot reads
completed. Where the process backend cannot give a bot a cgroup, it falls back to RLIMIT_AS, and
the bot ends failed with a reason that says so instead of a silent SIGTRAP.

On docker the kind's image is examples/browser_bot/Dockerfile (the runtime image plus Debian's
chromium from the mirror), built by the test when missing; the bot runs with /dev/shm and /tmp
sized as the Dockerfile says and Chromium's own sandbox off (the container is the fence).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from botfleet.orchestrators.process.cgroups import detect
from tests.support import (
    REPO,
    RUNTIME_IMAGE,
    RedisServer,
    running_manager,
    transitions,
    wait_for_command,
    wait_for_status,
    wait_until,
)

EXAMPLE = REPO / "examples" / "browser_bot"
KIND = json.loads((EXAMPLE / "kind.json").read_text())
CHROMIUM = shutil.which("chromium")
CGROUPS = detect(None, Path("/nonexistent-botfleet-probe"))
MANAGER_ENV = {"PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(REPO)])}

FIRST = b"""<!doctype html><title>Botfleet browser test</title>
<h1>Hello from the test</h1><p>served on 127.0.0.1</p>"""
SECOND = b"<!doctype html><title>Second page</title><p>the bot followed a command</p>"

BROWSER_IMAGE = "botfleet-browser-bot:" + RUNTIME_IMAGE.rsplit(":", 1)[1]
#: What examples/browser_bot/Dockerfile says a browser needs on the docker backend.
DOCKER_ENV = {"BOTFLEET_DOCKER_SHM_MB": "256", "BOTFLEET_DOCKER_TMPFS_MB": "256"}

needs_chromium_as_root = pytest.mark.skipif(
    CHROMIUM is None or os.geteuid() != 0,
    reason="needs Debian's chromium and root (bots get uids, cgroups and a private /tmp)",
)


def test_the_kind_document_is_what_the_bot_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    """kind.json is the export of the class (`python -m botfleet.runtime kind`), not a copy
    that drifts from it."""
    from botfleet.runtime.kind import kind_document

    monkeypatch.syspath_prepend(str(EXAMPLE))
    exported = kind_document("browser_bot:BrowserBot", image=KIND["image"])
    assert exported == KIND
    assert sorted(KIND["commands"]) == ["screenshot", "text", "title", "visit"]


@pytest.fixture
def site() -> Iterator[tuple[str, list[str]]]:
    """Two pages on 127.0.0.1 (a port the kernel picks as it binds); the user agents seen."""
    agents: list[str] = []

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {"/": FIRST, "/second": SECOND}.get(self.path)
            agents.append(self.headers.get("User-Agent", ""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", agents
    finally:
        server.shutdown()
        server.server_close()


def _processes_of(bot_id: str) -> list[int]:
    """Pids whose environment names the bot (the runtime and what it started)."""
    marker = f"BOTFLEET_BOT_ID={bot_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _memory_cgroup(pid: int) -> str:
    """The memory cgroup's path (v1), else the unified one (v2)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    by_controller = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}
    return by_controller.get("memory") or by_controller[""]


def _members(cgroup: str) -> dict[int, str]:
    """Every process in `cgroup` now: pid -> its start time (a pid alone may be reused)."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _memory_cgroup(int(entry.name)) == cgroup:
                stat = (entry / "stat").read_text()
                members[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()[19]
        except (OSError, KeyError, ValueError):
            continue
    return members


def _still_there(members: dict[int, str]) -> list[int]:
    """The members still alive (a zombie runs nothing and holds no memory: its reaping is up to
    the parent it was handed to once the browser exited)."""
    left = []
    for pid, started in members.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[19] == started and fields[0] not in "ZX":
            left.append(pid)
    return left


def _memory_limit(cgroup: str) -> int | None:
    for root, name in (("memory", "memory.limit_in_bytes"), ("", "memory.max"),
                       ("unified", "memory.max")):  # fmt: skip
        path = Path("/sys/fs/cgroup", root, cgroup.lstrip("/"), name)
        if path.exists():
            return int(path.read_text())
    return None


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@needs_chromium_as_root
@pytest.mark.skipif(isinstance(CGROUPS, str), reason=f"needs cgroups per bot: {CGROUPS}")
@pytest.mark.timeout(240)
def test_a_browser_bot_sees_a_page_under_the_default_limits(
    tmp_path: Path, redis_server: RedisServer, site: tuple[str, list[str]]
) -> None:
    url, agents = site
    with running_manager(tmp_path, redis_server.url, extra_env=MANAGER_ENV) as manager:
        with manager.admin() as admin:
            registered = admin.post("/admin/kinds", json=KIND)
            assert registered.status_code == 201, registered.text
        _, client = manager.new_user()
        created = client.post(
            "/bots",
            json={"bot": "browser", "config": {"url": f"{url}/", "width": 640, "height": 360}},
        )
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        active = wait_for_status(client, bot_id, {"active", "failed", "completed"}, timeout=90)
        assert active["status"] == "active", (active, transitions(client, bot_id))

        def report() -> dict[str, Any]:
            return client.get(f"/bots/{bot_id}").json().get("report") or {}

        seen = wait_until(lambda: report().get("title") and report(), what="the bot's report")
        assert seen["title"] == "Botfleet browser test", seen
        assert "Hello from the test" in seen["text"] and seen["url"] == f"{url}/", seen
        assert any("HeadlessChrome" in agent for agent in agents), agents

        # Chromium runs in the bot's cgroup, as the bot's uid, memory bounded by the cgroup alone.
        runtime = [p for p in _processes_of(bot_id) if b"botfleet.runtime" in _cmdline(p)]
        assert len(runtime) == 1, _processes_of(bot_id)
        cgroup = _memory_cgroup(runtime[0])
        members = _members(cgroup)
        browsers = [p for p in members if b"chromium" in _cmdline(p)]
        assert len(browsers) >= 2, {p: _cmdline(p)[:80] for p in members}  # browser + helpers
        bot_uid = _uid(runtime[0])
        assert bot_uid != 0 and {_uid(p) for p in browsers} == {bot_uid}
        limits = Path(f"/proc/{browsers[0]}/limits").read_text()
        assert "Max address space         unlimited" in limits, limits
        assert _memory_limit(cgroup) == 2048 * 1024 * 1024
        assert os.readlink(f"/proc/{browsers[0]}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

        title = _command(client, bot_id, "title", {})
        assert title == {"title": "Botfleet browser test", "url": f"{url}/"}
        visited = _command(client, bot_id, "visit", {"url": f"{url}/second"})
        assert visited["title"] == "Second page" and visited["visits"] == 2, visited
        assert wait_until(lambda: report().get("title") == "Second page")
        shot = _command(client, bot_id, "screenshot", {})
        assert (shot["format"], shot["width"], shot["height"]) == ("png", 640, 360), shot
        assert shot["bytes"] > 100 and "data" not in shot
        refused = client.post(
            f"/bots/{bot_id}/commands", json={"action": "visit", "payload": {"url": "file:///etc"}}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["code"] == "invalid_payload"

        assert client.post(f"/bots/{bot_id}/stop").status_code == 202
        done = wait_for_status(client, bot_id, {"completed", "failed"})
        assert (done["status"], done["status_reason"], done["exit_code"]) == (
            "completed",
            "left",
            0,
        )
        assert _still_there(members) == [], {p: _cmdline(p)[:80] for p in _still_there(members)}
        log = client.get(f"/bots/{bot_id}/logs", params={"tail": 200}).text
        assert "the browser is closed" in log, log[-2000:]


@needs_chromium_as_root
@pytest.mark.timeout(180)
def test_without_a_cgroup_the_bot_says_why_chromium_cannot_run(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """No cgroup per bot: the backend bounds memory with RLIMIT_AS, under which Chromium dies with
    SIGTRAP and prints nothing useful. The bot refuses to start with a reason of its own."""
    env = MANAGER_ENV | {"BOTFLEET_PROCESS_CGROUPS": "off"}
    with running_manager(tmp_path, redis_server.url, extra_env=env) as manager:
        with manager.admin() as admin:
            assert admin.post("/admin/kinds", json=KIND).status_code == 201
        _, client = manager.new_user()
        created = client.post("/bots", json={"bot": "browser", "config": {"url": "about:blank"}})
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        ended = wait_for_status(client, bot_id, {"failed", "completed", "active"}, timeout=90)
        assert (ended["status"], ended["status_reason"]) == ("failed", "address_space_limited")
        detail = next(t for t in reversed(_transition_rows(client, bot_id)) if t["to"] == "failed")
        assert "RLIMIT_AS is 2048 MiB" in detail["detail"], detail
        assert "BOTFLEET_PROCESS_RLIMIT_AS_MB=0" in detail["detail"], detail


def _transition_rows(client: httpx.Client, bot_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(f"/bots/{bot_id}/transitions").json()["items"]
    return rows


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _command(client: httpx.Client, bot_id: str, action: str, payload: dict[str, Any]) -> Any:
    sent = client.post(f"/bots/{bot_id}/commands", json={"action": action, "payload": payload})
    assert sent.status_code == 202, sent.text
    answered = wait_for_command(client, bot_id, sent.json()["id"], {"acked", "failed"}, timeout=60)
    assert answered["status"] == "acked", answered
    return answered["result"]


@pytest.fixture(scope="module")
def browser_image(docker_engine: None) -> str:
    """The browser bot's image, built by scripts/build-browser-image.sh on the runtime image
    `make test` just built: `make test` starts it in the background, so this waits for that
    build, then runs the script again (Docker's cache makes it quick; alone, it builds)."""
    pid_file = REPO / ".botfleet" / "browser-image.pid"

    def background_build_done() -> bool:
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            return True  # no file, or its process is gone
        return False

    wait_until(background_build_done, timeout=900, what="the browser image's background build")
    env = os.environ | {
        "RUNTIME_IMAGE": RUNTIME_IMAGE,
        "BROWSER_IMAGE": BROWSER_IMAGE,
        "BUILD_PID_FILE": str(pid_file.with_suffix(".test.pid")),
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build-browser-image.sh")],
        check=True, timeout=900, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return BROWSER_IMAGE


@pytest.mark.timeout(1200)
def test_a_browser_bot_sees_a_page_on_the_docker_backend(
    tmp_path: Path, redis_server: RedisServer, site: tuple[str, list[str]], browser_image: str
) -> None:
    url, agents = site
    with running_manager(
        tmp_path, redis_server.url, backend="docker", extra_env=DOCKER_ENV
    ) as manager:
        with manager.admin() as admin:
            registered = admin.post("/admin/kinds", json=KIND | {"image": browser_image})
            assert registered.status_code == 201, registered.text
        _, client = manager.new_user()
        config = {"url": f"{url}/", "width": 640, "height": 360, "sandbox": False}
        created = client.post("/bots", json={"bot": "browser", "config": config})
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        active = wait_for_status(client, bot_id, {"active", "failed", "completed"}, timeout=90)
        assert active["status"] == "active", (active, transitions(client, bot_id))

        def report() -> dict[str, Any]:
            return client.get(f"/bots/{bot_id}").json().get("report") or {}

        seen = wait_until(lambda: report().get("title") and report(), what="the bot's report")
        assert seen["title"] == "Botfleet browser test", seen
        assert "Hello from the test" in seen["text"] and seen["url"] == f"{url}/", seen
        assert any("HeadlessChrome" in agent for agent in agents), agents

        # The container: /dev/shm as sized, no capabilities, not root.
        import docker

        engine = docker.from_env(timeout=10)
        try:
            container = engine.containers.get(active["runtime_ref"])
            host = container.attrs["HostConfig"]
            assert host["ShmSize"] == 256 * 1024 * 1024, host["ShmSize"]
            assert host["CapDrop"] == ["ALL"] and container.attrs["Config"]["User"] not in ("", "0")
        finally:
            engine.close()

        visited = _command(client, bot_id, "visit", {"url": f"{url}/second"})
        assert visited["title"] == "Second page" and visited["visits"] == 2, visited
        shot = _command(client, bot_id, "screenshot", {})
        assert (shot["format"], shot["width"], shot["height"]) == ("png", 640, 360), shot

        assert client.post(f"/bots/{bot_id}/stop").status_code == 202
        done = wait_for_status(client, bot_id, {"completed", "failed"})
        assert (done["status"], done["status_reason"], done["exit_code"]) == (
            "completed",
            "left",
            0,
        )
