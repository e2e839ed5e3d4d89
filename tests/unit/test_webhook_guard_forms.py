"""The webhook guard judges an IPv6 address by the IPv4 address it carries (issue 27, point 8):
6to4, Teredo, NAT64, IPv4-mapped and IPv4-compatible forms of a non-public address are refused
like the address itself, written literally or answered by DNS (faked); pure."""

from __future__ import annotations

import ipaddress

import pytest

from botfleet.manager.services.webhook_guard import UrlRefused, check_url, embedded_ipv4, pin
from tests.fakes import FakeDns


def six_to_four(v4: str, host: int = 0) -> str:
    """2002:AABB:CCDD::<host> for a.b.c.d (the IPv4 address in bits 16-48)."""
    packed = int(ipaddress.IPv4Address(v4))
    return str(ipaddress.IPv6Address((0x2002 << 112) | (packed << 80) | host))


def teredo(client: str, server: str = "65.54.227.120") -> str:
    """2001:0:<server>:<flags>:<port ^ 0xffff>:<client ^ 0xffffffff>."""
    address = (0x2001_0000 << 96) | (int(ipaddress.IPv4Address(server)) << 64)
    address |= 0x8000 << 48 | (0x9C40 ^ 0xFFFF) << 32
    address |= int(ipaddress.IPv4Address(client)) ^ 0xFFFF_FFFF
    return str(ipaddress.IPv6Address(address))


NON_PUBLIC = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]


@pytest.mark.parametrize("v4", NON_PUBLIC)
def test_every_form_of_a_non_public_ipv4_is_refused(v4: str) -> None:
    forms = [
        six_to_four(v4),  # 127.0.0.1 -> 2002:7f00:1::
        six_to_four(v4, host=0x1_0000_0000_0005),  # a subnet and host behind the tunnel
        teredo(v4),
        teredo("8.8.8.8", server=v4),
        f"::ffff:{v4}",
        f"::{v4}",
        f"64:ff9b::{v4}",
    ]
    for form in forms:
        with pytest.raises(UrlRefused, match="non-public"):
            check_url(f"http://[{form}]:8080/hook", allow_private=False)


def test_the_6to4_form_of_loopback_is_refused_when_dns_answers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert six_to_four("127.0.0.1") == "2002:7f00:1::"
    FakeDns(monkeypatch, {"tunnel.test": ["2002:7f00:1::"], "fine.test": ["2002:808:808::1"]})
    with pytest.raises(UrlRefused, match="non-public"):
        pin("http://tunnel.test/x", allow_private=False)
    assert pin("http://fine.test/x", allow_private=False).address == "2002:808:808::1"


def test_the_embedded_address_is_read_where_each_form_keeps_it() -> None:
    def v6(text: str) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(text)

    assert embedded_ipv4(v6("2002:7f00:1::")) == [ipaddress.IPv4Address("127.0.0.1")]
    assert [str(a) for a in embedded_ipv4(v6(teredo("192.168.1.1")))] == [
        "65.54.227.120",
        "192.168.1.1",
    ]
    assert [str(a) for a in embedded_ipv4(v6("64:ff9b::10.0.0.1"))] == ["10.0.0.1"]
    assert [str(a) for a in embedded_ipv4(v6("::10.0.0.1"))] == ["10.0.0.1"]
    assert embedded_ipv4(v6("::1")) == [] and embedded_ipv4(v6("2606:4700::1111")) == []


def test_public_addresses_in_these_forms_still_pass() -> None:
    for form in (six_to_four("8.8.8.8"), "::ffff:8.8.8.8", "2606:4700::1111"):
        check_url(f"http://[{form}]/hook", allow_private=False)
