"""A webhook's address is resolved once and pinned: every non-public answer refused (DNS faked);
pure."""

from __future__ import annotations

import pytest

from botfleet.manager.services.webhook_guard import UrlRefused, pin
from tests.fakes import FakeDns

PUBLIC = "93.184.215.14"  # a public address (the guard accepts it); never reached in tests


def test_pin_refuses_every_non_public_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDns(monkeypatch, {"mixed.test": ["127.0.0.1"], "public.test": [PUBLIC]})
    with pytest.raises(UrlRefused, match="non-public"):
        pin("http://mixed.test/x", allow_private=False)
    target = pin("https://public.test:8443/x?y=1", allow_private=False)
    assert target.url == f"https://{PUBLIC}:8443/x?y=1" and target.address == PUBLIC
    assert target.headers == {"Host": "public.test:8443"}
    assert target.extensions == {"sni_hostname": "public.test"}
    v6 = pin("http://[2606:4700::1111]/x", allow_private=False)
    assert v6.url == "http://[2606:4700::1111]/x" and v6.headers == {"Host": "[2606:4700::1111]"}
