"""Bots shipped with the runtime; `botfleet.runtime.loader.BUILTIN_BOTS` maps their names."""
