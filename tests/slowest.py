"""The slowest tests of a whole `make test` (several pytest runs), from their JUnit XML files:
`python -m tests.slowest RESULTS.xml...`. A test's time is its setup, call and teardown."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SHOWN = 15


def slowest(paths: list[Path], count: int = SHOWN) -> list[tuple[float, str]]:
    timed = []
    for path in paths:
        run = path.stem  # pg, pg-serial, sqlite
        for case in ET.parse(path).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            timed.append((float(case.get("time", 0)), f"{module}.py::{case.get('name')} ({run})"))
    return sorted(timed, reverse=True)[:count]


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv if Path(arg).exists()]
    print(f"===== {SHOWN} slowest tests of this make test =====")
    for seconds, name in slowest(paths):
        print(f"{seconds:8.2f}s  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
