"""Outbound safety: non-public hosts are refused in every spelling, checked when the
request is made, and the connection goes to the checked address. Listening sockets
prove that no refused request reaches its target."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import httpx
import pytest

from postcall import outbound
from postcall.errors import UrlNotAllowed
from postcall.outbound import OutboundPolicy, guarded_client, parse_networks
from tests.e2e.receiver import Receiver, Tripwire, running

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "0x7f.1",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "0177.0.0.1",
    "localhost",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def wire() -> Iterator[Tripwire]:
    with Tripwire("127.0.0.1") as w:
        yield w


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_and_nothing_connects(
    host: str, wire: Tripwire
) -> None:
    policy = OutboundPolicy()
    url = f"http://{host}:{wire.port}/hook"
    with pytest.raises(UrlNotAllowed):
        policy.check_url(url)
    # httpx refuses some spellings itself (0177.0.0.1); either way nothing is sent.
    with (
        guarded_client(policy, timeout_s=2) as client,
        pytest.raises((UrlNotAllowed, httpx.InvalidURL)),
    ):
        client.post(url, content=b"{}")
    assert wire.connections == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback_is_refused_and_nothing_connects() -> None:
    with Tripwire("::1") as wire:
        url = f"http://[::1]:{wire.port}/"
        with guarded_client(OutboundPolicy(), timeout_s=2) as c, pytest.raises(UrlNotAllowed):
            c.post(url)
        assert wire.connections == 0


NON_PUBLIC = [
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fd00::1",
    "fc00::1",
    "fe80::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2001:db8::1",
]
"""Addresses no outbound request may reach unless allowed (with LOOPBACK_SPELLINGS)."""


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not OutboundPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert OutboundPolicy().permits(ipaddress.ip_address(address))


def test_allowed_networks_open_exactly_those_networks() -> None:
    policy = OutboundPolicy(parse_networks("192.168.10.0/24, 127.0.0.1/32"))
    assert policy.permits(ipaddress.ip_address("192.168.10.7"))
    assert policy.permits(ipaddress.ip_address("::ffff:192.168.10.7"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("192.168.11.7"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.2"))
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http:///nohost", "http://h:99999/"]
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        OutboundPolicy().check_url(url)


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is resolved by the guard only; the connection uses the
    address the guard checked, and the Host header keeps the name."""
    calls: list[str] = []
    real = outbound.resolve

    def counting(host: str, port: int) -> list[outbound.IPAddress]:
        calls.append(host)
        return real("127.0.0.1", port)  # what "receiver.test" resolves to, once

    monkeypatch.setattr(outbound, "resolve", counting)
    policy = OutboundPolicy(parse_networks("127.0.0.0/8"))
    with running(Receiver(respond=lambda n, r: (204, {}))) as rx:
        port = rx.url.rsplit(":", 1)[1]
        with guarded_client(policy, timeout_s=5) as client:
            r = client.post(f"http://receiver.test:{port}/in", content=b"{}")
        assert r.status_code == 204
        assert calls == ["receiver.test"]
        assert rx.received[0].headers["host"] == f"receiver.test:{port}"


def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def mixed(host: str, port: int) -> list[outbound.IPAddress]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")]

    monkeypatch.setattr(outbound, "resolve", mixed)
    with pytest.raises(UrlNotAllowed, match=r"10\.0\.0\.5"):
        OutboundPolicy().check_url("https://mixed.example/")


def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(UrlNotAllowed, match="cannot be resolved"):
        OutboundPolicy().check_url("http://no-such-host.invalid/")


def test_redirects_are_not_followed(wire: Tripwire) -> None:
    policy = OutboundPolicy(parse_networks("127.0.0.0/8"))
    target = f"http://127.0.0.1:{wire.port}/"
    with running(Receiver(respond=lambda n, r: (302, {"Location": target}))) as rx:
        with guarded_client(policy, timeout_s=5) as client:
            r = client.post(rx.url + "/in", content=b"{}")
        assert r.status_code == 302 and len(rx.received) == 1
    assert wire.connections == 0


def test_no_environment_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    client = guarded_client(OutboundPolicy(), timeout_s=1)
    assert isinstance(client, httpx.Client) and not client.trust_env
    client.close()
