"""`make bench` is not run by `make test`, so a helper removed from tests/support once broke it
at import (bench/load.py used `free_port`) with nothing failing: every bench module imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("module", sorted(p.stem for p in BENCH.glob("*.py")))
def test_every_bench_module_imports(module: str) -> None:
    importlib.import_module(f"bench.{module}")
