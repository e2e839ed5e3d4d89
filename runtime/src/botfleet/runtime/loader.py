"""Turn BOTFLEET_BOT (a built-in name or `module:Class`) into a Bot subclass."""

from __future__ import annotations

import importlib
from typing import Final

from botfleet.runtime.bot import Bot

# Imported only when named: `telegram` needs the optional extra botfleet[telegram] (aiogram).
BUILTIN_BOTS: Final[dict[str, str]] = {
    "demo": "botfleet.runtime.bots.demo:DemoBot",
    "telegram": "botfleet.runtime.bots.telegram:TelegramBot",
}


class BotLoadError(ValueError):
    """The bot spec names nothing importable, or something that is not a Bot subclass."""


def load_bot_class(spec: str) -> type[Bot]:
    target = BUILTIN_BOTS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not (sep and module_name and attr):
        builtins = ", ".join(sorted(BUILTIN_BOTS))
        raise BotLoadError(
            f"unknown bot {spec!r}: use a built-in name ({builtins}) or 'module:Class'"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # a user module may fail to import in any way
        raise BotLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BotLoadError(f"{module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Bot)):
        raise BotLoadError(f"{target!r} is not a subclass of botfleet.runtime.bot.Bot")
    return obj
