"""The built-in `demo` bot: idles until told to leave, and misbehaves on request.

Config switches (listed in docs/tutorial.md), so every lifecycle path can be exercised without
a real meeting: `fail_on_start`, `start_delay_s` (a slow join), `crash_after_s`, `finish_after_s`
(+ `exit_code`), `freeze_after_s` (the process hangs: no heartbeats, deaf to SIGTERM),
`refuse_reconfigure`, `ignore_leave`, `silent`, `report_every_s` (reports `{"n": <count>}`),
`state_note` (prints the notes earlier runs left in its state directory, then adds its own). It
answers the custom commands `echo` (the payload back) and `sleep` (`{"s": N}`: answers after N
seconds). Lines printed to stdout are the bot's logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from botfleet.runtime.bot import Bot
from botfleet.runtime.declare import command

SLEEP_PAYLOAD = {
    "type": "object",
    "properties": {"s": {"type": "number", "minimum": 0, "maximum": 3600}},
}


class DemoCrash(RuntimeError):
    """Raised on purpose by `crash_after_s`."""


class DemoBot(Bot):
    """Idles until told to leave; its config makes it misbehave on request."""

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
        if self.config.get("state_note") is not None:
            self._keep_note(str(self.config["state_note"]))

    def _keep_note(self, note: str) -> None:
        """`state_note`: print what earlier runs wrote to the state directory, then add ours,
        so a restart or relaunch with the same `state_key` shows what survived."""
        if self.state_dir is None:
            _say("demo bot state: no state directory")
            return
        path = self.state_dir / "notes.txt"
        before = path.read_text() if path.exists() else ""
        _say(f"demo bot state before: [{before}]")
        path.write_text(f"{before}{note};")

    async def run(self) -> int | None:
        timers = {
            name: float(self.config[name])
            for name in ("crash_after_s", "finish_after_s", "freeze_after_s")
            if self.config.get(name) is not None
        }
        first = min(timers, key=timers.__getitem__, default=None)
        reporter = None
        if self.config.get("report_every_s"):
            reporter = asyncio.create_task(self._report_every(float(self.config["report_every_s"])))
        try:
            await asyncio.wait_for(self.wait_for_leave(), None if first is None else timers[first])
        except TimeoutError:
            if first == "crash_after_s":
                raise DemoCrash(f"crash_after_s={timers[first]} elapsed") from None
            if first == "freeze_after_s":
                _say("demo bot freezing (freeze_after_s)")
                time.sleep(10**6)  # blocks the event loop: heartbeats and signal handling stop
            code = int(self.config.get("exit_code", 0))
            _say(f"demo bot finished on its own with exit code {code}")
            return code
        finally:
            if reporter is not None:
                reporter.cancel()
        if self.config.get("ignore_leave"):
            await _idle_forever()
        return None

    async def on_reconfigure(self, config: dict[str, Any]) -> None:
        if self.config.get("refuse_reconfigure"):
            raise ValueError("demo bot refuses every reconfigure (refuse_reconfigure)")
        _say(f"demo bot reconfigured: {json.dumps(config)}")

    async def _report_every(self, interval_s: float) -> None:
        count = 0
        while True:
            await asyncio.sleep(interval_s)
            count += 1
            await self.report({"n": count})

    @command("echo", payload={"type": "object"})
    async def echo(self, payload: dict[str, Any]) -> Any:
        """Answers with the payload it was sent."""
        return payload

    @command("sleep", payload=SLEEP_PAYLOAD)
    async def sleep(self, payload: dict[str, Any]) -> Any:
        """Answers after `s` seconds (default 1)."""
        seconds = float(payload.get("s", 1))
        if not 0 <= seconds <= 3600:
            raise ValueError("sleep: `s` must be between 0 and 3600 seconds")
        await asyncio.sleep(seconds)
        return {"slept_s": seconds}

    async def on_secrets(self, secrets: dict[str, str]) -> None:
        _say(f"demo bot received new secrets ({len(secrets)} names)")  # never the values

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
