"""Outbound safety: requests postcall makes on a client's behalf reach only public hosts.

A URL's host is resolved once, *every* address it resolves to is checked, and the
connection goes to exactly the checked address (the Host header and TLS SNI keep the
name), so a DNS answer that changes between the check and the connection (rebinding)
cannot redirect it. Loopback, private, link-local (169.254.169.254 included),
carrier-grade NAT, IPv6 unique-local, unspecified, multicast and reserved addresses are
refused, as are IPv6 addresses embedding one of them (IPv4-mapped, 6to4, Teredo,
NAT64), unless they lie in an allowed network (``POSTCALL_ALLOWED_NETWORKS``). Numeric
spellings such as ``0x7f.1``, ``2130706433`` or ``017700000001`` are resolved by the
system resolver like any name, so they are checked as what they are.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from postcall.errors import UrlNotAllowed, UrlUnresolvable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.168.1.5"`` → networks; ``ValueError`` on a malformed entry."""
    found = []
    for part in raw.split(","):
        if part.strip():
            found.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(found)


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """The address itself and every IPv4 address an IPv6 address carries."""
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            out.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
        if ip.teredo is not None:
            out.extend(ip.teredo)
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _public(ip: IPAddress) -> bool:
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_loopback:
        return False
    if ip.is_private or ip.is_link_local:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    return ip.is_global and not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the system resolver; numeric forms included)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    return list(seen)


class OutboundPolicy:
    """Which addresses requests may go to: public ones, and ``allowed`` networks."""

    def __init__(self, allowed: Iterable[IPNetwork] = ()) -> None:
        self.allowed = tuple(allowed)

    def permits(self, ip: IPAddress) -> bool:
        candidates = _embedded(ip)
        if any(c in net for c in candidates for net in self.allowed if c.version == net.version):
            return True
        return all(_public(c) for c in candidates)

    def check_host(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and return its addresses if every one is permitted.

        ``UrlNotAllowed`` otherwise, and when it does not resolve.
        """
        bare = host.strip("[]")
        try:
            addresses = resolve(bare, port)
        except (OSError, UnicodeError):
            raise UrlUnresolvable(f"the host {host!r} cannot be resolved", field="url") from None
        if not addresses:
            raise UrlUnresolvable(f"the host {host!r} cannot be resolved", field="url")
        for ip in addresses:
            if not self.permits(ip):
                raise UrlNotAllowed(
                    f"the host {host!r} resolves to {ip}, a non-public address; list its "
                    "network in POSTCALL_ALLOWED_NETWORKS to allow it",
                    field="url",
                )
        return addresses

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not http(s) with a host, or whose host is not permitted."""
        try:
            httpx.URL(url)  # what the client will send must parse too
        except httpx.InvalidURL as exc:
            raise UrlNotAllowed(f"the URL is not valid: {exc}", field="url") from None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlNotAllowed("the URL must be http:// or https:// with a host", field="url")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UrlNotAllowed("the URL's port is not valid", field="url") from None
        self.check_host(parts.hostname, port)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport that checks the host at request time and connects to the
    checked address (keeping the Host header and, for https, the SNI name)."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        ip = self.policy.check_host(url.host, port)[0]
        request.url = url.copy_with(host=str(ip))
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        return super().handle_request(request)


def guarded_client(
    policy: OutboundPolicy, *, timeout_s: float, max_connections: int = 100
) -> httpx.Client:
    """A client for requests on a client's behalf: guarded, no redirects, no env proxies;
    at most ``max_connections`` open at once (requests beyond wait for one)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    return httpx.Client(
        transport=GuardedTransport(policy, limits=limits),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": "postcall-webhooks"},
    )
