"""Outbound webhooks, the pure parts: the signature against the Standard Webhooks test vector, and
the address guard (literal addresses only, no DNS), which the sender applies again before each
send."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import sessionmaker

from botfleet.manager.background.webhook_sender import Claimed, WebhookSender
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import (
    InvalidSignature,
    new_secret,
    sign,
    signature,
    verify,
)
from botfleet.manager.services.webhook_guard import UrlRefused, check_url


def a_box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode()])


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The reference libraries' test vector (standard-webhooks, python/tests).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, timestamp=1614265330)
    verify(secret, headers, body, now=1614265330 + 10)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, body, now=1614265330 + 3600)
    headers["webhook-signature"] = f"v1,bm90IGl0 {expected}"  # a rotated secret signs alongside
    verify(secret, headers, body, now=1614265330)
    with pytest.raises(InvalidSignature):
        verify(secret, {}, body)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
        "http://240.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "gopher://93.184.215.14/",
        "file:///etc/passwd",
    ],
)
def test_guard_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False)


def test_guard_allows_public_addresses_and_private_when_told() -> None:
    check_url("https://93.184.215.14/hook", allow_private=False)
    check_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(UrlRefused):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_the_sender_checks_the_address_again_before_each_send() -> None:
    sender = WebhookSender(sessionmaker(), Settings(webhook_allow_private=False), box=a_box())
    try:
        payload = {"type": "bot.transition", "id": "evt_1", "timestamp": "x", "data": {}}
        claimed = Claimed("d1", "http://127.0.0.1:9/hook", new_secret(), payload)
        status_code, error, _ = sender.post(claimed)
        assert status_code is None and error is not None and error.startswith("refused:")
    finally:
        sender.close()
