"""The built-in `telegram` bot kind: a scenario bot on aiogram 3 (`botfleet[telegram]`).

Imported only when a bot is started with `bot: "telegram"`, so other bots never load aiogram.
"""

from botfleet.runtime.bots.telegram.bot import TelegramBot

__all__ = ["TelegramBot"]
