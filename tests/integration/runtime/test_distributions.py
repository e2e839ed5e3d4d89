"""The two distributions built from this tree: botfleet-runtime alone is what a bot image or a
bot author installs (standard library only, never the manager); botfleet-server is the rest."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.timeout(300)


def _version(pyproject: Path) -> str:
    return tomllib.loads(pyproject.read_text())["project"]["version"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(REPO / "runtime"),
            str(REPO),
        ],
        check=True,
        timeout=240,
    )
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"botfleet_runtime", "botfleet_server"}, found
    return found


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return [n for n in zf.namelist() if ".dist-info/" not in n]


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(meta).decode())


def test_one_version_for_both() -> None:
    assert _version(REPO / "pyproject.toml") == _version(REPO / "runtime" / "pyproject.toml")


def test_runtime_wheel_holds_the_runtime_alone(wheels: dict[str, Path]) -> None:
    names = _names(wheels["botfleet_runtime"])
    assert names and all(n.startswith(("botfleet/runtime/", "bot_runtime/")) for n in names), [
        n for n in names if not n.startswith(("botfleet/runtime/", "bot_runtime/"))
    ]
    # `botfleet` is a namespace shared with botfleet-server: neither ships its __init__.py.
    assert "botfleet/__init__.py" not in names
    requires = _metadata(wheels["botfleet_runtime"]).get_all("Requires-Dist") or []
    assert all("extra ==" in r for r in requires), requires  # standard library only


def test_server_wheel_holds_no_runtime(wheels: dict[str, Path]) -> None:
    names = _names(wheels["botfleet_server"])
    tops = {"/".join(n.split("/")[:2]) for n in names}
    assert tops == {"botfleet/manager", "botfleet/orchestrators", "botfleet/cli"}, tops
    version = _version(REPO / "pyproject.toml")
    requires = _metadata(wheels["botfleet_server"]).get_all("Requires-Dist") or []
    assert f"botfleet-runtime=={version}" in requires
    # The dashboard's templates and the migrations travel with the package.
    assert "botfleet/manager/ui/templates/base.html" in names
    assert "botfleet/manager/migrations/script.py.mako" in names


def test_runtime_alone_runs_and_keeps_its_old_name(wheels: dict[str, Path], tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            str(wheels["botfleet_runtime"]),
        ],
        check=True,
        timeout=120,
    )
    probe = (
        "import importlib.util, warnings\n"
        "import botfleet.runtime.bot as new\n"
        "assert importlib.util.find_spec('botfleet.manager') is None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from bot_runtime.bot import Bot\n"
        "assert Bot is new.Bot, 'the alias must be the same module'\n"
        "assert any(issubclass(w.category, DeprecationWarning) for w in caught)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.stdout.strip() == "ok", done.stderr
    # Without its environment the runner refuses with a clear message, by either name.
    for name in ("botfleet.runtime", "bot_runtime"):
        ran = subprocess.run(
            [python, "-m", name],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert ran.returncode != 0
        assert "BOTFLEET_BOT_ID is required" in ran.stderr, ran.stderr
