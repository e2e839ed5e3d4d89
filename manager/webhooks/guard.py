"""Refuse webhook URLs that reach the manager's own network (SSRF), unless the operator allows.

Checked when an endpoint is saved and again right before each send, since a DNS answer can
change. Only http and https; every address the host resolves to must be public.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UrlRefused(Exception):
    """The URL may not be called; the message says why."""


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
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


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UrlRefused for a URL that is malformed, not http(s), or (unless `allow_private`)
    whose host resolves to a loopback, private, link-local, multicast or reserved address."""
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
    if allow_private:
        return
    try:
        answers = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"cannot resolve {parts.hostname}: {exc}") from None
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if _refused_address(address):
            raise UrlRefused(
                f"{parts.hostname} resolves to {address}, a non-public address "
                "(BOTFLEET_WEBHOOK_ALLOW_PRIVATE allows it)"
            )
