"""A greeter bot: a typed config and one command, the smallest bot a team might bring."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from botfleet.runtime.bot import Bot, command


class GreeterConfig(BaseModel):
    """How the bot greets: checked by the manager before a start or a reconfigure."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, not ignored
    greeting: str = "Hello"
    excited: bool = False


class GreetPayload(BaseModel):
    name: str = Field(min_length=1)


class GreeterBot(Bot):
    """Greets whoever it is told to."""

    Config = GreeterConfig  # self.config is a GreeterConfig; its JSON Schema goes in the kind
    config: GreeterConfig

    async def on_start(self) -> None:
        self.log.info("greeting with %r", self.config.greeting)
        await self.report({"greeting": self.config.greeting})

    async def on_reconfigure(self, config: GreeterConfig) -> None:
        await self.report({"greeting": config.greeting})

    @command("greet", payload=GreetPayload)
    async def greet(self, payload: GreetPayload) -> dict[str, str]:
        """Greet someone by name."""
        mark = "!" if self.config.excited else "."
        return {"text": f"{self.config.greeting}, {payload.name}{mark}"}
