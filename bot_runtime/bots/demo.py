"""The built-in `demo` bot: idles until told to leave, and misbehaves on request.

Config switches (listed in the README's walk), so every lifecycle path can be exercised without
a real meeting: `fail_on_start`, `start_delay_s` (a slow join), `crash_after_s`, `finish_after_s`
(+ `exit_code`), `freeze_after_s` (the process hangs: no heartbeats, deaf to SIGTERM),
`refuse_reconfigure`, `ignore_leave`, `silent`. Lines printed to stdout are
the bot's logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bot_runtime.bot import Bot


class DemoCrash(RuntimeError):
    """Raised on purpose by `crash_after_s`."""


class DemoBot(Bot):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # `silent`: the runtime never calls the manager back for this bot.
        self.callbacks_enabled = not self.config.get("silent", False)

    async def on_start(self) -> None:
        if self.config.get("start_delay_s"):
            _say(f"demo bot joining slowly ({self.config['start_delay_s']}s)")
            await asyncio.sleep(float(self.config["start_delay_s"]))
        if self.config.get("fail_on_start"):
            raise RuntimeError("demo bot told to fail on start (fail_on_start)")
        _say(f"demo bot {self.bot_id} started with config {json.dumps(self.config)}")

    async def run(self) -> int | None:
        timers = {
            name: float(self.config[name])
            for name in ("crash_after_s", "finish_after_s", "freeze_after_s")
            if self.config.get(name) is not None
        }
        first = min(timers, key=timers.__getitem__, default=None)
        try:
            await asyncio.wait_for(self.wait_for_leave(), timers.get(first))
        except TimeoutError:
            if first == "crash_after_s":
                raise DemoCrash(f"crash_after_s={timers[first]} elapsed") from None
            if first == "freeze_after_s":
                _say("demo bot freezing (freeze_after_s)")
                time.sleep(10**6)  # blocks the event loop: heartbeats and signal handling stop
            code = int(self.config.get("exit_code", 0))
            _say(f"demo bot finished on its own with exit code {code}")
            return code
        if self.config.get("ignore_leave"):
            await _idle_forever()
        return None

    async def on_reconfigure(self, config: dict[str, Any]) -> None:
        if self.config.get("refuse_reconfigure"):
            raise ValueError("demo bot refuses every reconfigure (refuse_reconfigure)")
        _say(f"demo bot reconfigured: {json.dumps(config)}")

    async def on_leave(self) -> None:
        if self.config.get("ignore_leave"):
            _say("demo bot asked to leave, ignoring it (ignore_leave)")
        else:
            _say("demo bot leaving")


async def _idle_forever() -> None:
    """Misbehave on purpose: survive even the runtime's cancellation, so only SIGKILL ends us."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            _say("demo bot ignoring cancellation (ignore_leave)")


def _say(line: str) -> None:
    print(line, flush=True)
