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


def _refused_address(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
                f"{host} resolves to {address}, a non-public address "
                "(BOTFLEET_WEBHOOK_ALLOW_PRIVATE allows it)"
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
