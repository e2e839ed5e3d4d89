"""A bot that floods its own output, for tests/integration/isolation/test_process_disk.py.

Config: `mode` "flood": a child process writes 1 KiB lines to stdout as fast as it can for
`seconds` or until `max_mb` MiB went out, then prints `FLOOD done <bytes>`; `mode` "tick": the
bot prints `TICK <n> <unix time>` every `every_s` seconds (a bystander whose log must keep up).
The flood runs in a child, so the bot's own heartbeats go on meanwhile.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

from botfleet.runtime.bot import Bot

FLOOD = """
import os, sys, time
seconds, limit = float(sys.argv[1]), int(sys.argv[2]) << 20
block = (b"f" * 1023 + b"\\n") * 64
sent, end = 0, time.monotonic() + seconds
while sent < limit and time.monotonic() < end:
    sent += os.write(1, block)
print("FLOOD done", sent, flush=True)
"""


class FloodBot(Bot):
    async def on_start(self) -> None:
        config: dict[str, Any] = self.config
        if config.get("mode") == "tick":
            self.ticker = asyncio.get_running_loop().create_task(self._tick(config))
            return
        self.child = subprocess.Popen(
            [sys.executable, "-c", FLOOD, str(config["seconds"]), str(int(config["max_mb"]))]
        )

    async def _tick(self, config: dict[str, Any]) -> None:
        n = 0
        while True:
            print("TICK", n, time.time(), flush=True)
            n += 1
            await asyncio.sleep(float(config.get("every_s", 0.2)))
