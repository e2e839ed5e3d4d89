"""The credential cache keeps no fill that raced a change: a request that read the database before
a bot ended cannot put the old answer back; pure."""

from __future__ import annotations

from botfleet.manager.hot_path.credentials import CredentialCache, KnownBot
from botfleet.manager.lifecycle import BotStatus


def test_a_fill_that_raced_a_change_is_not_kept() -> None:
    cache = CredentialCache("redis://127.0.0.1:1/0", max_entries=10, ttl_s=60)
    cache._subscribed = True  # as if listening; no thread needed for this rule
    generation = cache.generation()  # a request reads the database...
    cache.forget({"bot:b"})  # ...while the bot's end commits
    cache.put("d", KnownBot("b", BotStatus.ACTIVE), generation=generation)
    assert cache.get("d") is None
