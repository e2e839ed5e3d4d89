"""A bot that leaves a process behind, for tests/integration/isolation/test_exit_waits.py.

On start it starts a `sleep` child in a session of its own (setsid: out of the bot's process
group) and prints `ESCAPED <pid>`; then its `run` returns at once, a natural finish (exit 0).
Its record must not read `completed` while that child lives.
"""

from __future__ import annotations

import subprocess

from botfleet.runtime.bot import Bot


class EscaperBot(Bot):
    async def on_start(self) -> None:
        child = subprocess.Popen(["sleep", "120"], start_new_session=True)
        print("ESCAPED", child.pid, flush=True)

    async def run(self) -> None:
        return None
