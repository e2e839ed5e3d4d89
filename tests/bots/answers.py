"""A bot for tests/integration/api/test_custom_commands.py and test_secrets_update.py: answers
commands the demo bot cannot (a result too large, a value JSON cannot hold, a digest of a secret).

It never prints or reports a secret: `secret_digest` answers the SHA-256 of one, so a test can
check which value the bot holds without the value travelling anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from botfleet.runtime.bot import Bot


class AnswersBot(Bot):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secrets_seen = 0  # how many times on_secrets ran

    async def on_command(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "big":
            return {"blob": "x" * int(payload["bytes"])}
        if action == "wait":  # long enough for a test to answer in the bot's place
            await asyncio.sleep(float(payload.get("s", 600)))
            return None
        if action == "not_json":
            return {"value": float("nan")}
        if action == "secret_digest":
            value = self.secrets.get(str(payload["name"]))
            digest = hashlib.sha256(value.encode()).hexdigest() if value is not None else None
            return {"sha256": digest, "updates": self.secrets_seen}
        return await super().on_command(action, payload)

    async def on_secrets(self, secrets: dict[str, str]) -> None:
        if "refuse" in secrets:
            raise ValueError("answers bot refuses secrets named 'refuse'")
        self.secrets_seen += 1
        print(f"answers bot took new secrets ({len(secrets)} names)", flush=True)
