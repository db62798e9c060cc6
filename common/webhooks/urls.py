"""Which URLs a webhook may be sent to: http(s) with a host and no credentials, resolving only
to public addresses (unless WEBHOOK_ALLOW_PRIVATE), so that a registered endpoint cannot make
the service probe its own network. Checked at registration and again before each attempt,
since DNS may change in between."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from common.errors import ValidationError

MAX_URL_LENGTH = 2048
Resolver = Callable[..., list]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused(reason: str) -> ValidationError:
    return ValidationError("invalid url", {"url": reason})


def check_url(url: object, allow_private: bool, resolve: Resolver = socket.getaddrinfo) -> str:
    """The URL, or ValidationError naming `url` with the reason it is refused."""
    if not isinstance(url, str) or not url.strip():
        raise refused("is required: an http or https URL")
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        raise refused(f"must be a URL of at most {MAX_URL_LENGTH} characters, without spaces")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ or ] in the host
        raise refused("is not a well-formed URL") from None
    if parts.scheme not in ("http", "https"):
        raise refused("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise refused("must not carry credentials (user:password@)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refused("has an invalid port") from None
    host = parts.hostname
    if not host:
        raise refused("must name a host")
    if not allow_private:
        for address in _addresses(host, port, resolve):
            problem = _non_public(address)
            if problem:
                raise refused(f"resolves to a {problem} address ({address}), which is refused")
    return url


def _addresses(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        found = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise refused(f"the host {host} does not resolve") from None
    addresses = []
    for _family, _type, _proto, _name, sockaddr in found:
        # An IPv6 scope ("fe80::1%eth0") is not part of the address.
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    if not addresses:
        raise refused(f"the host {host} does not resolve")
    return addresses


def _non_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address: judge it instead.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is not None:
            return _non_public(embedded)
    kinds = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        # Shared (carrier-grade NAT) and other special-purpose ranges.
        ("non-global", not address.is_global),
    )
    return next((kind for kind, hit in kinds if hit), None)
