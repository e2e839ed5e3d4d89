"""A bot written the way the README's "Writing a bot" shows: a pydantic config, commands declared
with `@command` (a model payload, a JSON Schema payload, none), a secret it needs.

Used by tests/unit/test_runtime_declarations.py, tests/integration/runtime/ and the CLI's
`kinds export` / `dev run` tests.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from botfleet.runtime.bot import Bot, command


class GreeterConfig(BaseModel):
    """How the greeter greets."""

    greeting: str = "hello"
    repeat: int = Field(1, ge=1, le=5)
    report_on_start: bool = False


class GreetPayload(BaseModel):
    name: str = Field(min_length=1)
    shout: bool = False


class Greeting(BaseModel):
    text: str


class GreeterBot(Bot):
    """Greets whoever it is told to.

    A second paragraph that the kind's description leaves out.
    """

    Config = GreeterConfig
    secrets = ("api_key",)
    config: GreeterConfig

    async def on_start(self) -> None:
        print(f"greeter started: {self.config.greeting!r} x{self.config.repeat}", flush=True)
        if self.config.report_on_start:
            await self.report({"greeting": self.config.greeting})

    async def on_reconfigure(self, config: GreeterConfig) -> None:
        if config.greeting == "refuse":
            raise ValueError("the greeter refuses to say 'refuse'")
        print(f"greeter reconfigured: {config.greeting!r}", flush=True)

    @command("greet", payload=GreetPayload)
    async def greet(self, payload: GreetPayload) -> Greeting:
        """Greet someone by name."""
        text = " ".join([f"{self.config.greeting} {payload.name}"] * self.config.repeat)
        return Greeting(text=text.upper() if payload.shout else text)

    @command(payload={"type": "object", "properties": {"n": {"type": "integer"}}})
    def count(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Count to n (a plain method and a JSON Schema payload)."""
        return {"numbers": list(range(1, int(payload.get("n", 3)) + 1))}

    @command
    async def key_length(self) -> int:
        """The length of the api_key secret (never the secret)."""
        return len(self.secrets["api_key"])
