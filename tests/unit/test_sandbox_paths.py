"""What a process bot keeps of /tmp when it gets a private one (orchestrators/process/sandbox.py):
whatever it needs to run must stay visible, or the runtime cannot even be imported (a checkout,
its editable install's sources and its virtualenv under /tmp, as a CI clone may be)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from botfleet.orchestrators.process.sandbox import _kept_paths


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    assert str(tmp_path.resolve()).startswith("/tmp/"), "pytest's tmp_path lies under /tmp"
    for part in ("src", "runtime/src", ".venv/bin", "work"):
        (tmp_path / part).mkdir(parents=True)
    return tmp_path.resolve()


def test_the_managers_import_path_under_tmp_is_kept(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [str(checkout / "src"), str(checkout / "runtime/src")])
    kept = list(_kept_paths(Path("/var/lib/botfleet/bots/200001"), {}, ["/usr/bin/python3"]))
    assert kept == [str(checkout / "runtime/src"), str(checkout / "src")]


def test_only_the_outermost_of_nested_paths_is_bound(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [str(checkout / "src")])
    kept = _kept_paths(
        checkout / "work",
        {"PYTHONPATH": str(checkout)},
        [str(checkout / ".venv/bin/python")],
    )
    assert list(kept) == [str(checkout)]


def test_nothing_outside_tmp_is_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", ["/usr/lib/python3/dist-packages", ""])
    assert list(_kept_paths(Path("/var/lib/botfleet/bots/1"), {"HOME": "/root"}, ["python3"])) == []
