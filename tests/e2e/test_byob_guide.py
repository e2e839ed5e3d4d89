"""docs/bring-your-own-bot.md runs as written: each of its parts against a manager of its own.

The guide marks what a reader runs with `<!-- run: PART -->` before a bash block; the blocks of
one part run in order, line by line, in one bash (variables and `cd` carry over), from a copy of
the files the guide names (examples/, docs/templates/, sdk/node) in a directory bot uids can
read. The shell has what `make run` prints exported (`BOTFLEET_URL`, a user's `BOTFLEET_KEY`,
`BOTFLEET_ADMIN_TOKEN`) and `.venv/bin` first on PATH. A line fails the test when it exits
non-zero, or when its output lacks what its `# → …` comment promises. At the end every bot the
part started has `completed`. A block marked `<!-- excerpt: PATH -->` must appear in PATH as it
is shown.

Part `docker` builds its image from the runtime image the template names. When that image holds
another runtime than this tree's (the images are built by `make test`; a working tree may be
ahead of them), the test builds a stand-in with this tree's runtime on top of it and hands it to
the guide's build as RUNTIME_IMAGE, which the template honours.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doc_shell import Shell
from tests.support import (
    ADMIN_TOKEN,
    REPO,
    Manager,
    RedisServer,
    running_manager,
    user_env,
)

pytestmark = pytest.mark.timeout(420)

GUIDE = REPO / "docs" / "bring-your-own-bot.md"
TEMPLATE = REPO / "docs" / "templates" / "Dockerfile.bot"
RUN_BLOCK = re.compile(r"<!-- run: ([a-z ]+) -->\s*```bash\n(.*?)```", re.S)
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\s*```\w*\n(.*?)```", re.S)
PROMISE = re.compile(r"\s#\s*→\s*(.+)$")
#: What the guide works on, copied; never the reader's build output.
COPIED = ("examples/greeter", "examples/node-greeter", "docs/templates", "sdk/node")
LEFT_OUT = shutil.ignore_patterns(
    "dist", "node_modules", "package-lock.json", "*.kind.json", "*.process.json", "__pycache__",
    ".pytest_cache",
)  # fmt: skip
GUIDE_IMAGE = "greeter-bot:0.1.0"  # the tag part `docker` builds
#: This machine's offline mirror of PyPI, when it has one: pip (the guide's, and the manager's
#: building the kind's virtualenv) then reaches no network.
LOCAL_INDEX = Path("/opt/pypi/simple")
PIP_ENV = {"PIP_INDEX_URL": LOCAL_INDEX.as_uri()} if LOCAL_INDEX.is_dir() else {}


def guide_lines(part: str) -> list[str]:
    """The lines of every block of `part`, in order, continuation lines joined."""
    lines: list[str] = []
    for parts, block in RUN_BLOCK.findall(GUIDE.read_text()):
        if part not in parts.split():
            continue
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def test_the_guide_shows_what_its_files_hold() -> None:
    """Every bash block is run by a part below; every excerpt is in its file as shown; the
    template's default base is the runtime image of this version."""
    text = GUIDE.read_text()
    assert text.count("```bash") == len(RUN_BLOCK.findall(text)), "a bash block nothing runs"
    assert {p for parts, _ in RUN_BLOCK.findall(text) for p in parts.split()} == set(PARTS)
    excerpts = EXCERPT.findall(text)
    assert excerpts, "the guide lost its excerpt of the bot"
    for path, shown in excerpts:
        assert shown in (REPO / path).read_text(), f"the guide's excerpt of {path} is not in it"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG RUNTIME_IMAGE=botfleet-runtime:{version}\n" in TEMPLATE.read_text()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """The guide's files, where bot uids may read them (pytest's tmp_path is 0700) and not under
    the bots' private /tmp."""
    root = Path(tempfile.mkdtemp(prefix="bf-byob-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        for path in COPIED:
            shutil.copytree(REPO / path, root / path, ignore=LEFT_OUT)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def walk(part: str, manager: Manager, workdir: Path, **env: str) -> None:
    """Run the part's lines against `manager` as a new user; then all its bots have ended
    `completed`."""
    lines = guide_lines(part)
    assert lines, f"the guide lost its part {part!r}"
    user, client = manager.new_user()
    shell_env = user_env(
        BOTFLEET_URL=manager.url,
        BOTFLEET_KEY=user["api_key"],
        BOTFLEET_ADMIN_TOKEN=ADMIN_TOKEN,
        BOTFLEET_CONFIG=str(workdir / "no-cli-config.toml"),
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **PIP_ENV,
        **env,
    )
    shell = Shell(shell_env, workdir)
    transcript: list[str] = []
    try:
        for line in lines:
            status, output = shell.run(line)
            transcript.append(f"$ {line}\n{output}")
            found = PROMISE.search(line)
            promise = found.group(1).strip() if found else ""
            broken = promise not in output  # "" is in every output
            if status != 0 or broken:
                lacks = f"; its output lacks {promise!r}" if broken else ""
                raise AssertionError(
                    f"the guide's line failed (exit {status}{lacks}):\n$ {line}\n{output}\n"
                    f"--- the part so far:\n{''.join(transcript[:-1])[-4000:]}\n"
                    f"--- the manager's log:\n{manager.log_tail(40)}"
                )
        bots = client.get("/bots", params={"limit": 100}).json()["items"]
        assert bots, f"part {part} started no bot"
        assert all(bot["status"] == "completed" for bot in bots), [
            (bot["name"], bot["bot"], bot["status"], bot["status_reason"]) for bot in bots
        ]
    finally:
        client.close()
        shell.close()


def test_part_1_a_python_package_on_the_process_backend(
    workdir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = {
        # The kind's virtualenv goes with the copy, not into the machine's /var/lib/botfleet.
        # Its first start builds it (seconds; a minute on a busy machine) while the bot is
        # still `requested`: the suite's launch and start timeouts never count the build.
        "BOTFLEET_PROCESS_KIND_ENV_ROOT": str(workdir / "kind-envs"),
        **PIP_ENV,
    }
    with running_manager(tmp_path, redis_server.url, extra_env=settings) as manager:
        walk("python", manager, workdir)


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="needs node (>= 20), npm"
)
def test_part_3_a_node_bot_of_an_exec_kind(
    workdir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    with running_manager(tmp_path, redis_server.url) as manager:
        walk("node", manager, workdir)


def test_part_2_an_image_on_the_docker_backend(
    workdir: Path, redis_server: RedisServer, tmp_path: Path, docker_engine: None
) -> None:
    built: list[str] = []
    try:
        env = {}
        base = current_runtime_base(workdir, built)
        if base is not None:
            env["RUNTIME_IMAGE"] = base
        with running_manager(tmp_path, redis_server.url, backend="docker") as manager:
            built.insert(0, GUIDE_IMAGE)  # removed first: it is built on the base
            walk("docker", manager, workdir, **env)
    finally:
        for image in built:
            subprocess.run(["docker", "rmi", image], capture_output=True, check=False)


PARTS = ("python", "docker", "node")

_RUNTIME_DIGEST = """
import hashlib, pathlib, botfleet.runtime as r
root = pathlib.Path(r.__file__).parent
h = hashlib.sha256()
for p in sorted(root.rglob("*.py")):
    h.update(p.relative_to(root).as_posix().encode() + b"\\0" + p.read_bytes())
print(h.hexdigest())
"""


def runtime_digest(python: list[str]) -> str:
    done = subprocess.run(
        [*python, "-c", _RUNTIME_DIGEST], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def current_runtime_base(workdir: Path, built: list[str]) -> str | None:
    """None when the template's base image holds this tree's runtime; else the tag of an image
    built on it with this tree's runtime installed over its own (appended to `built`)."""
    base = re.search(r"^ARG RUNTIME_IMAGE=(\S+)$", TEMPLATE.read_text(), re.M)
    assert base, "the template lost its RUNTIME_IMAGE argument"
    image = base.group(1)
    mine = runtime_digest([sys.executable])
    if runtime_digest(["docker", "run", "--rm", "--entrypoint", "python", image]) == mine:
        return None
    from botfleet.orchestrators.process.runtime_wheel import build_wheel

    name, data = build_wheel()
    context = workdir / "runtime-base"
    context.mkdir()
    (context / name).write_bytes(data)
    (context / "Dockerfile").write_text(
        f"FROM {image}\nUSER root\nCOPY {name} /tmp/\n"
        f"RUN pip install --no-cache-dir --no-deps --force-reinstall /tmp/{name}"
        f" && rm /tmp/{name}\n"
        "USER 10001:10001\n"
    )
    tag = f"botfleet-byob-runtime:{hashlib.sha256(data).hexdigest()[:12]}"
    built.append(tag)
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return tag
