"""Refuse webhook URLs that reach the manager's own network (SSRF), unless the operator allows.

Checked when an endpoint is saved, and again on every send attempt, where the check also *pins*
the connection: the host is resolved once, every answer must be public, and the request goes to
that checked address (`pin`), never to whatever a second resolution would say. Otherwise a DNS
server answering a public address to the check and 127.0.0.1 to the HTTP client a moment later
(DNS rebinding) would get a signed POST delivered to loopback. Only http and https.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(Exception):
    """The URL may not be called; the message says why."""


#: IPv6 ranges whose last 32 bits are an IPv4 address a packet to them reaches: NAT64 (the
#: well-known and the local-use prefixes) and the deprecated IPv4-compatible form (::a.b.c.d).
LAST_32_BITS_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address `ip` carries: 6to4 (2002::/16, bits 16-48), Teredo (2001::/32: the
    server, and the client XORed with 0xffffffff in the last 32 bits), NAT64 and IPv4-compatible
    (the last 32 bits). Tunnels and translators deliver to those, so they are judged too: the
    6to4 form of 127.0.0.1 (2002:7f00:1::) is loopback to a host that routes 6to4."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in LAST_32_BITS_IPV4) and int(ip) > 1:  # not :: nor ::1
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
    return found


def _refused_address(ip: Address) -> bool:
    """Non-public, or an IPv6 address that carries a non-public IPv4 (`embedded_ipv4`); an
    IPv4-mapped address (::ffff:a.b.c.d) is its IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _refused_address(ip.ipv4_mapped)
        if any(_refused_address(inner) for inner in embedded_ipv4(ip)):
            return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global  # shared (100.64/10), documentation and other special ranges
    )


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: `url` has the checked address in place of the host name;
    `headers` keep the name (`Host`) and `extensions` the TLS server name, so the server still
    sees its own name and an https certificate is still verified against it."""

    url: str
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def _parse(url: str) -> tuple[SplitResult, int]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in the URL are not allowed")
    return parts, port


def _resolve(host: str, port: int, *, allow_private: bool) -> list[Address]:
    """Every address `host` resolves to, each checked (unless `allow_private`), in the
    resolver's order."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"cannot resolve {host}: {exc}") from None
    addresses: list[Address] = []
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not allow_private and _refused_address(address):
            raise UrlRefused(
                f"{host} resolves to {address}, a non-public address: refused unless the "
                "manager runs with BOTFLEET_WEBHOOK_ALLOW_PRIVATE=true (a receiver on this "
                "machine or network; see docs/how-to/webhooks.md)"
            )
        addresses.append(address)
    if not addresses:
        raise UrlRefused(f"cannot resolve {host}: no address")
    return addresses


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UrlRefused for a URL that is malformed, not http(s), or (unless `allow_private`)
    whose host resolves to a loopback, private, link-local, multicast or reserved address."""
    parts, port = _parse(url)
    if not allow_private:
        _resolve(str(parts.hostname), port, allow_private=False)


def pin(url: str, *, allow_private: bool) -> Target:
    """Check `url` as `check_url` does and return the request that connects to the address
    just checked (the first the resolver gave). Call it once per attempt, right before it."""
    parts, port = _parse(url)
    address = _resolve(str(parts.hostname), port, allow_private=allow_private)[0]
    original = httpx.URL(url)
    pinned = original.copy_with(host=str(address))
    headers = {"Host": original.netloc.decode("ascii")}  # name[:port], IDNA-encoded
    extensions: dict[str, Any] = {}
    if original.scheme == "https":  # the certificate must still match the name
        extensions["sni_hostname"] = original.raw_host.decode("ascii")
    return Target(str(pinned), str(address), headers, extensions)
