"""An example bot kind that drives headless Chromium over its DevTools pipe (see README.md)."""

from browser_bot.bot import BrowserBot

__all__ = ["BrowserBot"]
