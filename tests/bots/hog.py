"""A bot that holds more memory than its limit allows, spread over processes, for
tests/integration/isolation/test_process_cgroups.py.

Config: `children` (how many), `mb` (what each child holds, every page touched). Each child
prints `HOG <pid> holds <mb>` once it holds it; the bot then idles until asked to leave. Under
a per-process limit each child fits; under a per-bot limit they together do not.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from botfleet.runtime.bot import Bot

HOLD = """
import os, sys, time
held = b"x" * (int(sys.argv[1]) << 20)  # every page written
print("HOG", os.getpid(), "holds", sys.argv[1], flush=True)
time.sleep(120)
"""


class HogBot(Bot):
    async def on_start(self) -> None:
        config: dict[str, Any] = self.config
        self.children = [
            subprocess.Popen([sys.executable, "-c", HOLD, str(int(config["mb"]))])
            for _ in range(int(config["children"]))
        ]
