"""The Docker Engine's own account of how botfleet containers ended, independent of the manager."""

from __future__ import annotations

import threading
from contextlib import suppress

import docker


class ContainerExits:
    """The engine's own record of how containers ended: its `die` events, followed live (the
    engine keeps only its last 256 events, fewer than a run makes)."""

    def __init__(self) -> None:
        self.client = docker.from_env()
        self.codes: dict[str, list[int]] = {}
        self.died_at: dict[str, float] = {}  # epoch seconds, of the last death
        self.stream = self.client.events(
            decode=True,
            filters={"type": "container", "event": "die", "label": "botfleet.managed=true"},
        )
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        with suppress(Exception):  # the stream raises once closed
            for event in self.stream:
                attributes = event["Actor"]["Attributes"]
                bot_id = attributes.get("botfleet.bot_id", "")
                self.codes.setdefault(bot_id, []).append(int(attributes["exitCode"]))
                self.died_at[bot_id] = event["timeNano"] / 1e9

    def of(self, bot_ids: set[str]) -> dict[str, list[int]]:
        return {bot_id: list(self.codes[bot_id]) for bot_id in bot_ids if bot_id in self.codes}

    def close(self) -> None:
        self.stream.close()
        self.client.close()
