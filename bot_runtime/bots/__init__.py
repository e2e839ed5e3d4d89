"""Bots shipped with the runtime; `bot_runtime.loader.BUILTIN_BOTS` maps their names."""
