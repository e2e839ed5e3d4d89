"""A bot's Redis credentials and its commands' signatures (SECURITY.md, Redis), the pure parts: the
signing key, signed and tampered messages, a bot's URL and its ACL rules."""

from __future__ import annotations

import json

from botfleet.manager.messaging.bot_acl import acl_rules, bot_url, username
from botfleet.runtime.protocol import (
    CommandMessage,
    sign_command,
    signed_json,
    signing_key,
    verify_command,
)

KEY = signing_key("bft_a-token")


def test_signing_key_is_the_token_digest_the_manager_stores() -> None:
    from botfleet.manager.core.secrets import digest

    assert signing_key("bft_a-token") == digest("bft_a-token")


def test_a_signed_message_verifies_and_any_change_breaks_it() -> None:
    message = CommandMessage(
        id="c1", action="reconfigure", issued_at="t", config={"b": 1, "a": [1, 2]}, config_version=2
    )
    fields = json.loads(signed_json(message, KEY))
    assert verify_command(fields, KEY)
    assert verify_command(dict(reversed(list(fields.items()))), KEY), "key order is irrelevant"
    assert CommandMessage.from_dict(fields) == message

    for tampered in (
        fields | {"action": "leave"},
        fields | {"config": {"b": 2, "a": [1, 2]}},
        fields | {"id": "c2"},
        fields | {"extra": 1},  # an added field is not covered by the signature
        {k: v for k, v in fields.items() if k != "config_version"},
    ):
        assert not verify_command(tampered, KEY), tampered


def test_a_missing_malformed_or_foreign_signature_is_refused() -> None:
    fields = CommandMessage(id="c1", action="leave", issued_at="t").to_dict()
    assert not verify_command(fields, KEY), "unsigned"
    assert not verify_command(fields | {"sig": ""}, KEY)
    assert not verify_command(fields | {"sig": 12}, KEY)
    assert not verify_command(fields | {"sig": sign_command(fields, signing_key("other"))}, KEY)
    assert not verify_command(["not", "an", "object"], KEY)
    assert verify_command(fields | {"sig": sign_command(fields, KEY)}, KEY)


def test_a_bots_url_carries_its_own_user_and_token_only() -> None:
    url = bot_url("redis://:admin-pw@127.0.0.1:6379/0", "b-1", "bft_x-y")
    assert url == "redis://botfleet-bot-b-1:bft_x-y@127.0.0.1:6379/0"
    assert "admin-pw" not in url
    assert bot_url("rediss://[::1]:7000/2", "b", "t") == "rediss://botfleet-bot-b:t@[::1]:7000/2"
    assert ":" not in username("0190c2a4-7b7e-7000-8000-000000000000")


def test_the_acl_rules_grant_the_own_channel_and_nothing_else() -> None:
    rules = acl_rules("b-1", "ab" * 32)
    assert rules[:3] == ["reset", "on", "#" + "ab" * 32]
    assert "&bot_commands:b-1" in rules and "resetkeys" in rules
    granted = {r for r in rules if r.startswith("+")}
    assert granted == {"+subscribe", "+unsubscribe", "+ping"}
