"""The hostile bot of the containment figure (bench/containment.py): one attack, bounded.

Config: `attack` (`log_flood`, `memory`, `tmp_fill`, `fork`), `seconds` (how long it keeps at
it), `mb` (how much memory or /tmp it asks for). Each attack is a bug a real bot can have (a log
line in a loop, a leak, files left behind, runaway children); the manager's containment, not
the bot's good will, is what bounds it: the bot never stops itself short of `seconds`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from botfleet.runtime.bot import Bot

CHUNK = b"x" * (1 << 20)


def _log_flood(seconds: float) -> None:
    line = b"flood " + b"y" * 200 + b"\n"
    block = line * 4096
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        os.write(1, block)


def _memory(mb: int, seconds: float) -> None:
    """Two processes, each asking for `mb` MB: a per-process limit would let 2 x mb through."""
    child = subprocess.Popen(
        ["python3", "-c", f"b = bytearray({mb} << 20); import time; time.sleep({seconds})"]
    )
    held = bytearray(mb << 20)
    time.sleep(seconds)
    del held
    child.wait()


def _tmp_fill(mb: int) -> None:
    for place in ("/tmp", "/dev/shm"):
        try:
            with open(Path(place) / f"hostile-{os.getpid()}", "wb") as out:
                for _ in range(mb):
                    out.write(CHUNK)
        except OSError as exc:
            print(f"{place}: {exc.strerror}", flush=True)


def _fork(seconds: float) -> None:
    children = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(children) < 10_000:
        try:
            children.append(subprocess.Popen(["sleep", str(seconds)]))
        except OSError as exc:
            print(f"fork refused after {len(children)}: {exc.strerror}", flush=True)
            break
    time.sleep(max(deadline - time.monotonic(), 0))


class HostileBot(Bot):
    async def on_start(self) -> None:
        attack, seconds = self.config["attack"], float(self.config.get("seconds", 10))
        mb = int(self.config.get("mb", 256))
        work = {
            "log_flood": lambda: _log_flood(seconds),
            "memory": lambda: _memory(mb, seconds),
            "tmp_fill": lambda: _tmp_fill(mb),
            "fork": lambda: _fork(seconds),
        }[attack]
        asyncio.get_running_loop().run_in_executor(None, work)
